"""Refused images fail alone, over HTTP and in the CLI, with a reason code and no traceback.

An adversarial run found a 97 KB 1×50,000,000 PNG answered 500 on every image route and failed
whole batches, uploads and ingest jobs; and damaged JPEGs were indexed with a grey fill.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_jpeg
from tests.support.image_corpus import png_of_size
from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main
from vizdex.core.errors import VizdexError
from vizdex.encoders.base import Encoder, WrappedEncoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.encoders.streaming import encode_stream
from vizdex.imaging import ImageInputSettings

NEEDLE = png_of_size(1, 50_000_000)  # 97 KB, inside the pixel cap


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def cut_jpeg() -> bytes:
    data = photo_jpeg(7, 320, 240)
    return data[: len(data) // 2] + b"\xff\xd9"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Iterator[LiveServer]:
    # URLs allowed, so that a malformed one is refused for its syntax, not the policy.
    images = ImageInputSettings(allow_urls=True)
    settings = api_settings(
        tmp_path_factory.mktemp("hardening") / "data", cpu_settings, images=images
    )
    with live_server(settings, {clip_encoder.name: clip_encoder}) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        http.post("/v1/collections", json={"name": "hard"})
        yield http


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/vision/encode", {"images": [b64(NEEDLE)]}),
        ("/v1/collections/hard/search", {"image": b64(NEEDLE)}),
    ],
)
def test_the_needle_is_a_422_with_its_reason(client: httpx.Client, path: str, body: object) -> None:
    out = client.post(path, json=body)
    assert out.status_code == 422, out.text
    assert out.json()["code"] == "extreme_aspect_ratio"


def test_the_needle_fails_alone_in_a_batch(client: httpx.Client) -> None:
    good = b64(photo_jpeg(1))
    out = client.post("/v1/vision/batch", json={"images": [good, b64(NEEDLE), b64(cut_jpeg())]})
    assert out.status_code == 200, out.text
    data = out.json()
    assert (data["count"], data["failed"]) == (1, 2)
    assert [(e["index"], e["code"]) for e in data["errors"]] == [
        (1, "extreme_aspect_ratio"),
        (2, "corrupt"),
    ]


def test_the_needle_fails_alone_in_an_upload(client: httpx.Client) -> None:
    files = [
        ("files", ("good.jpg", photo_jpeg(2), "image/jpeg")),
        ("files", ("needle.png", NEEDLE, "image/png")),
        ("files", ("cut.jpg", cut_jpeg(), "image/jpeg")),
    ]
    client.post("/v1/collections", json={"name": "alone"})  # its own: tests run in any order
    out = client.post("/v1/collections/alone/images", files=files)
    assert out.status_code == 201, out.text
    results = out.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("indexed", None),
        ("failed", "extreme_aspect_ratio"),
        ("failed", "corrupt"),
    ]
    listed = client.get("/v1/collections/alone/images").json()
    assert [image["original_name"] for image in listed["images"]] == ["good.jpg"]


def test_ingest_finishes_with_one_failure_per_bad_file(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, 3)
    (photos / "needle.png").write_bytes(NEEDLE)
    (photos / "cut.jpg").write_bytes(cut_jpeg())
    argv = ["ingest", str(photos), "-c", "p", "--model", str(tiny_clip_dir), "--device", "cpu"]
    code = main([*argv, "--data-dir", str(tmp_path / "data"), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "indexed 3, failed 2" in out.out
    assert "extreme_aspect_ratio (1):" in out.out and "corrupt (1):" in out.out
    assert "Traceback" not in out.out + out.err


def test_cli_search_with_the_needle_is_one_line(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["collections", "create", "c", "--model", str(tiny_clip_dir), *data]) == 0
    needle = tmp_path / "needle.png"
    needle.write_bytes(NEEDLE)
    capsys.readouterr()
    code = main(["search", "-c", "c", "--image", str(needle), "--device", "cpu", *data])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("vizdex: error: image is 1×50,000,000")


class FailsOnWideImages(WrappedEncoder):
    """A real encoder whose preprocessing breaks (as a bug would) on images wider than 200 px."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__(inner)
        self.preprocess_spec = None  # decode threads call preprocess() itself

    @property
    def decode_min_side(self) -> int | None:
        return None

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if any(image.width > 200 for image in images):
            raise RuntimeError("allocation failed")
        return self.inner.preprocess(images)


def test_an_unexpected_preprocessing_error_fails_only_its_image(clip_encoder: Encoder) -> None:
    sizes = [(64, 48), (320, 240), (96, 72)]

    def load(size: tuple[int, int], _min_side: int | None) -> tuple[Image.Image, str]:
        return Image.new("RGB", size, (10, 200, 30)), f"{size}"

    batches = list(encode_stream(sizes, [FailsOnWideImages(clip_encoder)], load, batch_size=4))
    encoded = [item for batch in batches for item in batch.items]
    failed: list[tuple[tuple[int, int], VizdexError]] = [
        failure for batch in batches for failure in batch.failures
    ]
    assert sorted(encoded) == [(64, 48), (96, 72)]
    assert [(item, error.code) for item, error in failed] == [((320, 240), "unprocessable")]
    assert "RuntimeError" in failed[0][1].message


def test_pixels_of_a_whole_jpeg_upload_match_pillow(client: httpx.Client) -> None:
    """The strict decoder changes nothing for whole files: the stored original decodes the same."""
    data = photo_jpeg(3, 200, 150)
    out = client.post(
        "/v1/collections/hard/images", files=[("files", ("w.jpg", data, "image/jpeg"))]
    )
    (result,) = out.json()["results"]
    stored = client.get(f"/v1/collections/hard/images/{result['id']}/file").content
    assert stored == data
    assert Image.open(io.BytesIO(stored)).size == (200, 150)


MALFORMED_URLS = [
    "http://[::1/",
    "http://127.0.0.1:99999/x.jpg",
    "http://a/b c",
    # hosts that are no host: refused for their syntax (422), not by the URL policy (403)
    "http://a..b/",
    "http://%zz/",
    "http://" + "a" * 64 + ".test/",
    "http://[::1]x/",
    "http://256.1.1.1/",
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_url_is_invalid_url_everywhere(
    client: httpx.Client, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = client.post("/v1/collections/hard/images", json={"images": [{"url": url}]})
    assert (out.status_code, out.json()["code"]) == (422, "invalid_url"), out.text
    out = client.post("/v1/vision/encode", json={"images": [{"url": url}]})
    assert (out.status_code, out.json()["code"]) == (422, "invalid_url")
    code = main(["ingest", url, "-c", "u", "--data-dir", str(tmp_path), "--model", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"vizdex: error: {url!r} ") and ("valid URL" in err or "spaces" in err)
