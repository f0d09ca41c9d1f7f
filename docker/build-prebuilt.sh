#!/usr/bin/env bash
# Build the API image where containers cannot reach the npm registry: the
# Dockerfile's `prebuilt` target, from dist/ compiled from lib/ and a
# production-only node_modules/ installed on the host, FROM a Node image built
# from the host's node (docker/node-image/build.sh) unless NODE_IMAGE names one.
#   docker/build-prebuilt.sh [TAG]   (default fastify-etcd-apikeys:latest, the
#                                     image docker-compose.yml runs; prints TAG)
# Needs: Docker, node and npm, and the repo's dev dependencies (`npm ci`) for tsc.
# Nothing is written in the repo: the build context is a temporary folder.
set -euo pipefail

tag="${1:-fastify-etcd-apikeys:latest}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tsc="$repo/node_modules/.bin/tsc"
if [[ ! -x "$tsc" ]]; then
  echo "build-prebuilt.sh: $tsc is missing; run npm ci in $repo first" >&2
  exit 1
fi
node_image="${NODE_IMAGE:-}"
if [[ -z "$node_image" ]]; then
  node_image="$("$repo/docker/node-image/build.sh")"
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/prebuilt"
cp "$repo/Dockerfile" "$repo/package.json" "$ctx/"
cp "$repo/package.json" "$repo/package-lock.json" "$ctx/prebuilt/"

# What `npm run build` makes, written here instead of the repo's dist/ (which
# tests running meanwhile may be using).
"$tsc" -p "$repo/tsconfig.build.json" --outDir "$ctx/prebuilt/dist" >&2
# Production dependencies only, as `npm prune --omit=dev` leaves them.
# --ignore-scripts: `prepare` would run the build, which needs dev dependencies.
(cd "$ctx/prebuilt" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) >&2
rm "$ctx/prebuilt/package-lock.json"

docker build --quiet --target prebuilt --build-arg "NODE_IMAGE=$node_image" --tag "$tag" "$ctx" >/dev/null
echo "$tag"
