# shellcheck shell=bash
# Sourced by the image build scripts (docker/node-image, test/etcd-image): a FROM-scratch image
# fails at run time, not at build time, when a library is missing, so refuse to build unless the
# binaries need exactly the libraries the Dockerfile copies.
#   check_libraries LIBRARY... -- BINARY...
check_libraries () {
  local expected=() needed=() libs=() bin lib want
  while [[ $# -gt 0 && "$1" != -- ]]; do expected+=("$(readlink -f "$1")"); shift; done
  shift
  for bin in "$@"; do
    # ldd lines: "libc.so.6 => /lib/.../libc.so.6 (0x...)", "/lib64/ld-linux... (0x...)",
    # "linux-vdso.so.1 (0x...)" (in the kernel, not a file).
    mapfile -t libs < <(ldd "$bin" 2>/dev/null | awk '/=>/ { print $3; next } $1 ~ /^\// { print $1 }')
    for lib in "${libs[@]}"; do
      lib="$(readlink -f "$lib")"
      if [[ " ${expected[*]} " != *" $lib "* ]]; then
        echo "build.sh: $bin needs $lib, which the Dockerfile does not copy" >&2
        return 1
      fi
      needed+=("$lib")
    done
  done
  for want in "${expected[@]}"; do
    if [[ " ${needed[*]} " != *" $want "* ]]; then
      echo "build.sh: the Dockerfile copies $want, which none of $* needs (ldd); update both lists" >&2
      return 1
    fi
  done
}
