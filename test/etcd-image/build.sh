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
# shellcheck source=SCRIPTDIR/../../docker/check-libraries.sh
source "$here/../../docker/check-libraries.sh"
check_libraries "${expected_libs[@]}" -- "$etcd_bin" "$etcdctl_bin"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/"
# -L: /lib64/ld-linux-x86-64.so.2 is a symlink on Debian; copy the file itself.
cp -L "$etcd_bin" "$etcdctl_bin" "${expected_libs[@]}" "$ctx/"

docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "$tag"
