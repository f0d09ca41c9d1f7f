#!/usr/bin/env bash
# Build a local etcd image from the host's Debian etcd binaries, without pulling
# anything:  test/etcd-image/build.sh [TAG]   (prints the tag on success)
# Needs: Docker, and `apt-get install etcd-server etcd-client`.
set -euo pipefail

tag="${1:-fastify-etcd-apikeys/etcd:local}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
etcd_bin="$(command -v etcd || true)"
etcdctl_bin="$(command -v etcdctl || true)"
if [[ -z "$etcd_bin" || -z "$etcdctl_bin" ]]; then
  echo "build.sh: etcd and etcdctl must be on PATH (apt-get install etcd-server etcd-client)" >&2
  exit 1
fi

# The Dockerfile copies exactly these libraries; refuse to build an image that
# would fail at run time because the binaries need something else.
expected_libs=(/lib/x86_64-linux-gnu/libc.so.6 /lib64/ld-linux-x86-64.so.2)
for bin in "$etcd_bin" "$etcdctl_bin"; do
  # ldd lines: "libc.so.6 => /lib/.../libc.so.6 (0x...)", "/lib64/ld-linux... (0x...)",
  # "linux-vdso.so.1 (0x...)" (in the kernel, not a file). Statically linked
  # binaries print "not a dynamic executable" and need no library at all.
  while read -r lib; do
    [[ -z "$lib" ]] && continue
    known=false
    for want in "${expected_libs[@]}"; do
      if [[ "$(readlink -f "$lib")" == "$(readlink -f "$want")" ]]; then known=true; fi
    done
    if [[ "$known" != true ]]; then
      echo "build.sh: $bin needs $lib, which the Dockerfile does not copy" >&2
      exit 1
    fi
  done < <(ldd "$bin" 2>/dev/null | awk '/=>/ { print $3; next } $1 ~ /^\// { print $1 }')
done

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/"
# -L: /lib64/ld-linux-x86-64.so.2 is a symlink on Debian; copy the file itself.
cp -L "$etcd_bin" "$etcdctl_bin" "${expected_libs[@]}" "$ctx/"

docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "$tag"
