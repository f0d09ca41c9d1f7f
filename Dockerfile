# The standalone server (`node dist/server/cli.js`) as a small image that runs as a non-root user.
#
# Targets:
#   runtime (the default, last): builds from source in the `build` stage, with npm ci, so it needs
#     the npm registry:   docker build -t fastify-etcd-apikeys .
#   prebuilt: no registry and no RUN at all. It copies dist/ and a production-only node_modules/
#     built on the host, from prebuilt/ in the build context; docker/build-prebuilt.sh makes such a
#     context and builds it, FROM the Node image of docker/node-image/build.sh (which has no shell).
#
# NODE_IMAGE is any image with node on PATH (and, for the build stage, npm and a shell).
#
# Stage order matters: Docker's legacy builder (docker-compose 1.29 uses it) builds every stage
# before the target, BuildKit only those the target needs. So `prebuilt` comes before `build` (it
# must not need npm or a shell), and it must also build, empty, from a context without prebuilt/.
ARG NODE_IMAGE=node:20-bookworm-slim

# An empty stage: copying its / is how /data is made, owned by the app's user, without RUN.
FROM scratch AS empty

# What both targets share: environment, user, data volume, port, health check, command.
FROM ${NODE_IMAGE} AS base
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data
WORKDIR /app
# The admin token is kept in /data/admin-token when APIKEY_ADMIN_TOKEN is not set.
COPY --from=empty --chown=10001:10001 / /data/
VOLUME ["/data"]
# Numeric, so that no /etc/passwd is needed. The app's files stay root's: the user cannot change them.
USER 10001:10001
EXPOSE 8080
# With node itself: the image from docker/node-image has no shell and no curl. exitCode=1 first: a
# fetch that never settles (a connection accepted, then dropped) would otherwise exit 0, healthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "process.exitCode=1;fetch('http://127.0.0.1:8080/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Also replaces the entrypoint of upstream node images. node handles SIGTERM itself (close-with-grace).
ENTRYPOINT ["node", "dist/server/cli.js"]

# Host-built files. The wildcard lets this stage build from a context without prebuilt/ (the repo,
# building `runtime` with the legacy builder); package.json is named so that COPY has a source.
FROM base AS prebuilt
COPY package.json prebuil[t] ./

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
# --ignore-scripts: `prepare` would build before lib/ is here; no dependency needs its install script.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY lib/ lib/
RUN npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM base AS runtime
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules/ node_modules/
COPY --from=build /src/dist/ dist/
