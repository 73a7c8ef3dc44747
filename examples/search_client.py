"""A small vizdex client with httpx: upload a folder of images, then search it by text and by image.

    python examples/search_client.py ~/Pictures/holidays --text "a red bicycle in the snow"

It creates the collection, uploads the images (waiting for the ingestion job when the upload is
large), searches by text, by an uploaded image and by image id, fetches a thumbnail, and deletes
the collection at the end unless ``--keep`` is given. API errors are shown with their reason code.
VISION_API_REFERENCE.md documents every endpoint used here.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
FINISHED = {"done", "failed", "cancelled"}


class ApiError(Exception):
    """An error answer of the API: its status, reason code and message."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One API call; an error answer becomes an :class:`ApiError` with the API's reason code."""
    response = client.request(method, path, **kwargs)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError:
        try:
            body = response.json()
            raise ApiError(response.status_code, body["code"], body["detail"]) from None
        except (ValueError, KeyError, TypeError):
            raise ApiError(response.status_code, "http_error", response.text[:200]) from None
    return response


def upload(client: httpx.Client, collection: str, files: list[Path]) -> None:
    parts = [("images", (path.name, path.read_bytes())) for path in files]
    response = call(client, "POST", f"/v1/collections/{collection}/images", files=parts)
    answer = response.json()
    if response.status_code == 202:  # a large upload: a background job to wait for
        print(f"    accepted as job {answer['job_id']}; waiting")
        while True:
            job = call(client, "GET", answer["job_url"]).json()
            print("    {state}: {done} done, {failed} failed of {total}".format(**job))
            if job["state"] in FINISHED:
                if job["state"] != "done":
                    raise SystemExit(f"error: the upload job {job['state']}: {job['error']}")
                return
            time.sleep(0.5)
    print("    indexed {indexed}, duplicates {duplicates}, failed {failed}".format(**answer))
    for result in answer["results"]:
        if result["status"] == "failed":
            print(f"    {result['name']}: {result['code']} ({result['detail']})")


def search(client: httpx.Client, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"k": 3, **query}
    hits: list[dict[str, Any]] = call(
        client, "POST", f"/v1/collections/{collection}/search", json=body
    ).json()["hits"]
    for rank, hit in enumerate(hits, 1):
        print(f"    {rank}. id={hit['id']} score={hit['score']:.4f} {hit['original_name']}")
    if not hits:
        print("    (no hits)")
    return hits


def run(client: httpx.Client, collection: str, images: Path, text: str, keep: bool) -> None:
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no images in {images}")

    models = call(client, "GET", "/v1/models").json()["models"]
    print("models:", ", ".join(f"{m['name']} ({m['kind']})" for m in models))

    print(f"==> create collection {collection!r}")
    call(client, "POST", "/v1/collections", json={"name": collection})
    try:
        print(f"==> upload {len(files)} images from {images}")
        upload(client, collection, files)

        print(f"==> search by text: {text!r}")
        search(client, collection, {"text": text})

        first = call(client, "GET", f"/v1/collections/{collection}/images", params={"limit": 1})
        query = first.json()["images"][0]
        print(f"==> search by image: {query['original_name']} (id {query['id']}) as the query")
        data = base64.b64encode((images / query["original_name"]).read_bytes()).decode("ascii")
        hits = search(client, collection, {"image": data})
        print(f"    top hit: id={hits[0]['id']} (the query image is id {query['id']})")

        print(f"==> search by id: more like image {query['id']}")
        search(client, collection, {"image_id": query["id"]})

        thumbnail = call(client, "GET", query["thumbnail_url"])
        print(f"    thumbnail: {len(thumbnail.content)} bytes, {thumbnail.headers['content-type']}")
    finally:
        if not keep:
            print(f"==> delete collection {collection!r}")
            call(client, "DELETE", f"/v1/collections/{collection}")
            gone = client.get(f"/v1/collections/{collection}")
            print(f"    GET /v1/collections/{collection} -> {gone.status_code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("images", type=Path, help="a folder of images to upload")
    parser.add_argument("--url", default=os.environ.get("VIZDEX_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--collection", default=f"examples-{os.getpid()}")
    parser.add_argument("--text", default="a red bicycle in the snow", help="the text query")
    parser.add_argument(
        "--api-key", default=os.environ.get("VIZDEX_API_KEY"), help="an admin key, if needed"
    )
    parser.add_argument("--keep", action="store_true", help="keep the collection at the end")
    args = parser.parse_args(argv)
    if not args.images.is_dir():
        parser.error(f"{args.images} is not a folder")

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=120) as client:
        try:
            run(client, args.collection, args.images, args.text, args.keep)
        except ApiError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except httpx.HTTPError as error:
            print(f"error: cannot reach {args.url}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
