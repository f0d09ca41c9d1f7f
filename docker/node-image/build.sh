#!/usr/bin/env bash
# Build a local Node.js runtime image from the host's node, without pulling
# anything:  docker/node-image/build.sh [TAG]   (prints the tag on success)
# Needs: Docker, and a dynamically linked node on PATH (Debian's nodejs package,
# or NodeSource's) for x86_64. The image is checked before the tag is printed:
# it runs `node -e`, writes to /tmp and serves HTTP as a non-root user.
set -euo pipefail

tag="${1:-fastify-etcd-apikeys/node:local}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_bin="$(command -v node || true)"
if [[ -z "$node_bin" ]]; then
  echo "build.sh: node must be on PATH (apt-get install nodejs)" >&2
  exit 1
fi
node_bin="$(readlink -f "$node_bin")"

# The Dockerfile copies exactly these libraries; refuse to build an image that
# would fail at run time because node needs something else, or that would carry
# a library node no longer needs.
expected_libs=(
  /lib/x86_64-linux-gnu/libdl.so.2
  /lib/x86_64-linux-gnu/libstdc++.so.6
  /lib/x86_64-linux-gnu/libm.so.6
  /lib/x86_64-linux-gnu/libgcc_s.so.1
  /lib/x86_64-linux-gnu/libpthread.so.0
  /lib/x86_64-linux-gnu/libc.so.6
  /lib64/ld-linux-x86-64.so.2
)
# shellcheck source=SCRIPTDIR/../check-libraries.sh
source "$here/../check-libraries.sh"
check_libraries "${expected_libs[@]}" -- "$node_bin"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/"
# -L: several of these are symlinks on Debian; copy the files themselves.
cp -L "$node_bin" "$ctx/node"
cp -L "${expected_libs[@]}" "$ctx/"
mkdir -m 1777 "$ctx/tmp"
# Fixed metadata, so that the tar, and with it the image, is the same on every build.
tar --create --file "$ctx/dirs.tar" --directory "$ctx" --owner=0 --group=0 --numeric-owner --mtime=@0 tmp

docker build --quiet --tag "$tag" "$ctx" >/dev/null

# A scratch image fails at run time, not at build time, when something is
# missing: run it once, as a non-root user and without a network, as the API's
# image will.
check='
const fs = require("node:fs"); const os = require("node:os"); const http = require("node:http");
fs.writeFileSync(os.tmpdir() + "/probe", "ok"); fs.rmSync(os.tmpdir() + "/probe");
const server = http.createServer((req, res) => res.end("ok")).listen(0, "127.0.0.1", async () => {
  const res = await fetch("http://127.0.0.1:" + server.address().port + "/");
  const body = await res.text();
  server.close();
  if (body !== "ok") process.exit(1);
  console.log("node " + process.version + " runs");
});'
if ! out="$(docker run --rm --network none --user 10001:10001 "$tag" -e "$check" 2>&1)"; then
  echo "build.sh: the image $tag was built but does not run node:" >&2
  echo "$out" >&2
  exit 1
fi
echo "$tag"
