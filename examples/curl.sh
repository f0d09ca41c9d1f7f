#!/usr/bin/env bash
# The APIKey API reference's operations with curl, in its order, against a running `npm start`:
# list, create (the reference's POST payload), get the Location, patch, delete. Each step prints
# its HTTP status and what it does; a status other than the one SPEC.md gives stops the script
# with a non-zero exit.
#   npm start            # in another terminal; it keeps the admin token in ./data/admin-token
#   bash examples/curl.sh
# BASE_URL (default http://127.0.0.1:8080), TOKEN (default: the content of ./data/admin-token, or of
# $DATA_DIR/admin-token when DATA_DIR is set). Needs only curl, grep and sed.
set -euo pipefail

BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
if [ -z "${TOKEN:-}" ]; then
  token_file=${DATA_DIR:-./data}/admin-token
  if [ ! -r "$token_file" ]; then
    echo "no TOKEN given and no $token_file to read it from: run from where npm start runs, or set TOKEN" >&2
    exit 2
  fi
  TOKEN=$(cat "$token_file")
fi
KEYS=$BASE_URL/api/core/v2/namespaces/default/apikey

body=$(mktemp)
headers=$(mktemp)
trap 'rm -f "$body" "$headers"' EXIT

# step EXPECTED WHAT CURL-ARGS...: one request as the admin; prints "<status> <what>", and stops
# the script when the status is not EXPECTED.
step() {
  local expected=$1 what=$2 status
  shift 2
  status=$(curl -sS -o "$body" -D "$headers" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$@")
  echo "$status $what"
  if [ "$status" != "$expected" ]; then
    echo "expected $expected, got $status: $(cat "$body")" >&2
    exit 1
  fi
}

# 1. GET /apikey: every key of the namespace.
step 200 "GET    $KEYS: list the keys" "$KEYS"

# 2. POST /apikey with the reference's payload, as it stands. The server makes the name (the
# payload's "apikey-id" is ignored) and answers the secret, once, in "key".
payload=$(cat <<'JSON'
{
  "url": "https://asset-url.tar.gz",
  "sha512": "xxxxxxxxxxxxxxxxxxxxx",
  "filters": {
    "entity.system.os": "linux",
    "entity.system.arch": "amd64"
  },
  "headers": {
    "Authorization": "Bearer $TOKEN",
    "X-Forwarded-For": "client1, proxy1, proxy2"
  },
  "metadata": {
    "name": "apikey-id",
    "namespace": "default"
  }
}
JSON
)
step 201 "POST   $KEYS: create a key" -X POST -H 'Content-Type: application/json' --data-binary "$payload" "$KEYS"
location=$(sed -n 's/^[Ll]ocation: *\([^[:space:]]*\).*$/\1/p' "$headers")
if [ -z "$location" ]; then
  echo "the create answered no Location header" >&2
  exit 1
fi
echo "    Location: $location (the answer's \"key\" is its secret, shown this once)"

# 3. GET the Location: the key, without its secret.
step 200 "GET    $BASE_URL$location: read the key" "$BASE_URL$location"

# 4. PATCH it with a JSON merge patch: add a label.
step 200 "PATCH  $BASE_URL$location: add the label team=ops" -X PATCH \
  -H 'Content-Type: application/merge-patch+json' --data-binary '{"metadata":{"labels":{"team":"ops"}}}' \
  "$BASE_URL$location"
grep -q '"team":"ops"' "$body" || { echo "the patched key has no label team=ops: $(cat "$body")" >&2; exit 1; }

# 5. DELETE it: the key is revoked, its secret no longer authenticates.
step 204 "DELETE $BASE_URL$location: delete (revoke) the key" -X DELETE "$BASE_URL$location"
