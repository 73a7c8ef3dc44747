"""Ingesting http(s) URLs: through the image door's fetcher, originals kept, not fetched twice."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ingest_helpers import Harness
from tests.support.ingest_helpers import harness as harness  # the fixture
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.core.errors import InvalidInputError
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import Indexer, IngestRequest
from vizdex.search import SourceKind

PHOTO = jpeg_bytes(make_photo(300, 200, seed=42))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = PHOTO if self.path.endswith(".jpg") else b"<html>not an image</html>"
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg" if body is PHOTO else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_urls_are_fetched_once_and_kept(harness: Harness, server: _Server) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    door = ImageInputSettings(allow_urls=True, allowed_networks=("127.0.0.0/8",))
    indexer = Indexer(harness.catalog, harness.indexes, harness.encoders, harness.settings, door)
    urls = (f"{base}/photos/beach%20day.jpg", f"{base}/page.html")
    report = indexer.ingest(harness.collection.name, IngestRequest(urls=urls))

    assert (report.indexed, report.failed) == (1, 1)
    assert [(f.item, f.code) for f in report.failures] == [(urls[1], "unsupported_format")]
    (image,) = harness.images()
    assert image.source_kind is SourceKind.URL and image.source_uri == urls[0]
    assert image.original_name == "beach day.jpg"
    original = indexer.store.image_file(image)
    assert original is not None and original.read_bytes() == PHOTO

    again = indexer.ingest(harness.collection.name, IngestRequest(urls=urls[:1]))
    assert again.unchanged == 1
    # Fetched in parallel the first time (any order), not fetched again the second time.
    assert sorted(server.hits) == ["/page.html", "/photos/beach%20day.jpg"]
    harness.check()


def test_urls_are_refused_up_front_when_disabled(harness: Harness) -> None:
    with pytest.raises(InvalidInputError, match="VIZDEX_ALLOW_URLS"):
        harness.indexer.ingest(
            harness.collection.name, IngestRequest(urls=("http://127.0.0.1:9/a.jpg",))
        )
    assert harness.catalog.list_jobs() == []  # refused before a job existed
