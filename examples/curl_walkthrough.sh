#!/usr/bin/env bash
# A walk through the vizdex HTTP API with curl: create a collection, upload a folder of images,
# wait for the upload, search by text, by image and by id, fetch an image and its thumbnail, and
# delete the collection again. See VISION_API_REFERENCE.md for every endpoint.
#
#   examples/curl_walkthrough.sh [IMAGES_DIR]
#
# VIZDEX_URL        the service (default http://127.0.0.1:8000)
# VIZDEX_IMAGES     the folder of images, when not given as an argument
# VIZDEX_API_KEY    an admin key, when the service has keys configured
# VIZDEX_COLLECTION the collection to create (default walkthrough-<pid>); it is deleted at the end
# VIZDEX_TEXT       the text query (default "a red bicycle in the snow")
#
# Needs bash, curl and python3 (only to read values out of the JSON answers; jq would do too).
set -euo pipefail

BASE="${VIZDEX_URL:-http://127.0.0.1:8000}"
IMAGES="${1:-${VIZDEX_IMAGES:-}}"
COLLECTION="${VIZDEX_COLLECTION:-walkthrough-$$}"
TEXT="${VIZDEX_TEXT:-a red bicycle in the snow}"

if [[ -z "$IMAGES" || ! -d "$IMAGES" ]]; then
  echo "usage: $0 IMAGES_DIR   (or set VIZDEX_IMAGES)" >&2
  exit 2
fi

AUTH=()
if [[ -n "${VIZDEX_API_KEY:-}" ]]; then
  AUTH=(-H "Authorization: Bearer $VIZDEX_API_KEY")
fi

WORK="$(mktemp -d)"
BODY="$WORK/body.json"
CREATED=""

# On the way out, also after an error: remove the temporary files and the collection.
cleanup() {
  if [[ -n "$CREATED" ]]; then
    curl -sS -o /dev/null -X DELETE ${AUTH[@]+"${AUTH[@]}"} "$BASE/v1/collections/$COLLECTION" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

# api METHOD PATH [curl options...]: call the API. The answer's body goes to $BODY and its
# status to $STATUS; an error answer (4xx/5xx) is printed with its reason code and ends the script.
api() {
  local method="$1" path="$2"
  shift 2
  STATUS="$(curl -sS -o "$BODY" -w '%{http_code}' -X "$method" ${AUTH[@]+"${AUTH[@]}"} "$@" \
    "$BASE$path")"
  echo "    $method $path -> $STATUS"
  if ((STATUS >= 400)); then
    echo "error: $(json '"{} {}: {}".format(d["status_code"], d["code"], d["detail"])' < "$BODY" \
      2>/dev/null || cat "$BODY")" >&2
    exit 1
  fi
}

# json EXPR: evaluate a Python expression over the JSON document on stdin, bound to `d`.
json() {
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

# hits: print the hits of a search answer, one line each.
hits() {
  json '"\n".join("    {}. id={} score={:.4f} {}".format(i, h["id"], h["score"], h["original_name"])
                  for i, h in enumerate(d["hits"], 1)) or "    (no hits)"' < "$BODY"
}

step "the service at $BASE"
api GET /health/ready
api GET /v1/models
json '"    models: " + ", ".join("{} ({}, {} dims)".format(m["name"], m["kind"], m["dimensions"]) for m in d["models"])' < "$BODY"

step "create collection '$COLLECTION'"
api POST /v1/collections -H 'content-type: application/json' \
  -d "{\"name\": \"$COLLECTION\"}"
CREATED=1

step "upload the images in $IMAGES"
FILES=()
shopt -s nullglob nocaseglob
for file in "$IMAGES"/*.{jpg,jpeg,png,webp,gif,bmp,tif,tiff}; do
  FILES+=(-F "images=@$file")
done
shopt -u nullglob nocaseglob
if ((${#FILES[@]} == 0)); then
  echo "error: no images in $IMAGES" >&2
  exit 1
fi
api POST "/v1/collections/$COLLECTION/images" "${FILES[@]}" \
  -F 'metadata={"source": "curl walkthrough"}'
JOB_URL="$(json 'd["job_url"]' < "$BODY")"
if [[ "$STATUS" == 202 ]]; then
  # A large upload is a background job: poll it until it has finished.
  echo "    accepted as a job: $JOB_URL"
  while :; do
    api GET "$JOB_URL"
    state="$(json 'd["state"]' < "$BODY")"
    json '"    {state}: {done} done, {skipped} skipped, {failed} failed of {total}".format(**d)' < "$BODY"
    case "$state" in
      done) break ;;
      failed | cancelled) echo "error: the upload job $state" >&2; exit 1 ;;
    esac
    sleep 0.5
  done
else
  json '"    indexed {indexed}, duplicates {duplicates}, failed {failed}".format(**d)' < "$BODY"
fi

step "the collection now"
api GET "/v1/collections/$COLLECTION"
json '"    {} images; indexes: {}".format(d["image_count"], ", ".join(
      "{model} ({kind}, {vectors} vectors)".format(**i) for i in d["indexes"]))' < "$BODY"

step "search by text: \"$TEXT\""
TEXT_JSON="$(printf '%s' "$TEXT" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))')"
api POST "/v1/collections/$COLLECTION/search" -H 'content-type: application/json' \
  -d "{\"text\": $TEXT_JSON, \"k\": 3}"
hits

# The first image of the collection is the query for the image searches.
api GET "/v1/collections/$COLLECTION/images?limit=1"
QUERY_ID="$(json 'd["images"][0]["id"]' < "$BODY")"
QUERY_NAME="$(json 'd["images"][0]["original_name"]' < "$BODY")"

step "search by image: upload $QUERY_NAME (id $QUERY_ID) as the query"
# The search body carries the image as base64; built in a file, it can be any size.
{
  printf '{"k": 3, "image": "'
  base64 < "$IMAGES/$QUERY_NAME" | tr -d '\n'
  printf '"}'
} > "$WORK/query.json"
api POST "/v1/collections/$COLLECTION/search" -H 'content-type: application/json' \
  --data-binary "@$WORK/query.json"
hits
echo "    top hit: id=$(json 'd["hits"][0]["id"]' < "$BODY") (the query image is id $QUERY_ID)"

step "search by id: more like image $QUERY_ID (never itself)"
api POST "/v1/collections/$COLLECTION/search" -H 'content-type: application/json' \
  -d "{\"image_id\": $QUERY_ID, \"k\": 3}"
hits

step "image $QUERY_ID: its record, file and thumbnail"
api GET "/v1/collections/$COLLECTION/images/$QUERY_ID"
json '"    {original_name}: {width}x{height} {format}, {byte_size} bytes, metadata {metadata}".format(**d)' < "$BODY"
for what in file thumbnail; do
  curl -sS --fail ${AUTH[@]+"${AUTH[@]}"} -o "$WORK/$what" \
    -w "    $what: %{size_download} bytes, %{content_type}\n" \
    "$BASE/v1/collections/$COLLECTION/images/$QUERY_ID/$what"
done

step "delete collection '$COLLECTION'"
api DELETE "/v1/collections/$COLLECTION"
CREATED=""
gone="$(curl -sS -o /dev/null -w '%{http_code}' ${AUTH[@]+"${AUTH[@]}"} \
  "$BASE/v1/collections/$COLLECTION")"
echo "    GET /v1/collections/$COLLECTION -> $gone"
[[ "$gone" == 404 ]]

step "done"
