"""A catalog SQLite can only read: writes are 503 `storage_read_only`, one line in the CLI, and
`vizdex serve` stops before it starts.

Found by the second adversarial run: with `catalog.db-shm` a folder, SQLite opens the catalog
read-only without an error. `vizdex serve` started and answered reads, every upload was a 500
`internal_error` with a traceback, and the CLI's writes said "internal error: OperationalError".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.api_helpers import api_client, api_settings, photo_jpeg
from vizdex.cli.main import main
from vizdex.cli.serve import check_catalog
from vizdex.core.errors import StorageReadOnlyError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.search import Catalog, SearchSettings


@pytest.fixture
def data(tmp_path: Path, clip_encoder: Encoder) -> Path:
    data = tmp_path / "data"
    catalog = Catalog.open(SearchSettings.for_data_dir(data).catalog)
    catalog.create_collection("c", (clip_encoder.name,))
    catalog.close()
    shm = data / "catalog.db-shm"
    shm.unlink(missing_ok=True)
    shm.mkdir()  # SQLite cannot map its shared memory: it opens the database read-only
    return data


def test_writes_are_503_storage_read_only_and_reads_go_on(
    data: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    settings = api_settings(data, cpu_settings)
    with api_client(settings, {clip_encoder.name: clip_encoder}) as client:
        files = [("files", ("a.jpg", photo_jpeg(1), "image/jpeg"))]
        for answer in (
            client.post("/v1/collections", json={"name": "d"}),
            client.post("/v1/collections/c/images", files=files),
            client.delete("/v1/collections/c"),
        ):
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["code"] == "storage_read_only"
            assert "can be read but not written" in body["detail"]
        assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["c"]
        hits = client.post("/v1/collections/c/search", json={"text": "a photo"})
        assert hits.status_code == 200 and hits.json()["hits"] == []


def test_the_cli_says_so_in_one_line(
    data: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["collections", "create", "d", "--model", str(tiny_clip_dir), "--data-dir", str(data)]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("vizdex: error: the catalog database can be read but not written")


def test_serve_stops_before_it_starts(data: Path, cpu_settings: EncoderSettings) -> None:
    with pytest.raises(StorageReadOnlyError, match=r"catalog\.db-shm"):
        check_catalog(api_settings(data, cpu_settings))
