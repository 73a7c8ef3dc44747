"""The command line with Milvus (a milvus-lite file) as the vector store: ingest, search, reindex
with another index type, a GPU index type refused, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("milvus_lite")

from pymilvus import MilvusClient

from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main
from vizdex.search.index_store import FILE_SUFFIX


def test_ingest_search_reindex_and_delete_go_to_milvus(
    tmp_path: Path,
    tiny_dino_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = photo_folder(tmp_path / "photos", 8)
    data, lite = tmp_path / "data", tmp_path / "milvus" / "vectors.db"
    monkeypatch.setenv("VIZDEX_VECTOR_STORE", str(lite))
    monkeypatch.setenv("VIZDEX_MILVUS_INDEX", "flat")
    where = ["--data-dir", str(data)]
    ingest = ["ingest", str(tmp_path / "photos"), "-c", "p", "--model", str(tiny_dino_dir)]
    assert main([*ingest, *where, "--device", "cpu", "--quiet", "--json"]) == 0
    assert not list(data.glob(f"**/*{FILE_SUFFIX}"))  # no local FAISS index was built
    capsys.readouterr()

    argv = ["search", "-c", "p", "--image", str(files[3]), "-k", "3", "--json", *where]
    assert main(argv) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["source"] == str(files[3]) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(hits) == 3

    # A duplicate scan asks Milvus's range search: at threshold -1 every image pairs with every
    # other (one group of 8), and still no local FAISS index is built for it.
    assert main(["duplicates", "-c", "p", "--threshold", "-1", "--json", *where]) == 0
    scanned = json.loads(capsys.readouterr().out)
    assert [group["size"] for group in scanned["groups"]] == [8]
    assert not list(data.glob(f"**/*{FILE_SUFFIX}"))

    assert main(["reindex", "-c", "p", "--index-type", "hnsw", "--json", *where]) == 0
    rebuilt = json.loads(capsys.readouterr().out)
    assert rebuilt["store"] == "milvus"
    assert [(r["kind"], r["vectors"]) for r in rebuilt["indexes"]] == [("HNSW", 8)]

    assert main(["reindex", "-c", "p", "--index-type", "GPU_CAGRA", *where]) == 2
    assert "milvus-lite cannot build a GPU_CAGRA index" in capsys.readouterr().err

    assert main(["collections", "delete", "p", "--yes", *where]) == 0
    client = MilvusClient(str(lite))
    assert [name for name in client.list_collections() if name.startswith("vizdex_")] == []
