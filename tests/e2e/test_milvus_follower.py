"""The Milvus follower killed with SIGKILL mid-stream: restarted, Milvus holds exactly the catalog's
vectors. Real subprocesses running ``vizdex follow`` against a milvus-lite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from vizdex.search import Catalog, CatalogSettings, NewImage, SearchSettings
from vizdex.search.milvus_store import MilvusVectorStore
from vizdex.search.vector_store import open_milvus

REPO = Path(__file__).parents[2]
MODEL = "m"
DIM = 64
BATCH = 500


def _rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _items(vectors: np.ndarray, first: int) -> list[NewImage]:
    return [
        NewImage(
            sha256=f"{first + i:064x}",
            width=4,
            height=4,
            format="png",
            byte_size=1,
            vectors={MODEL: vector},
            metadata={"n": first + i},
        )
        for i, vector in enumerate(vectors)
    ]


def _follow(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vizdex", "follow", "--once", "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_follower_killed_mid_batch_resumes_and_milvus_ends_exact(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lite = data / "vectors.db"
    settings = SearchSettings.for_data_dir(data)
    catalog = Catalog.open(CatalogSettings(settings.catalog.database_url))
    record = catalog.create_collection("c", [MODEL])
    ids = [a.id for a in catalog.add_images(record.id, _items(_rows(12_000, seed=1), 0))]
    rng = np.random.default_rng(2)
    gone = [int(i) for i in rng.choice(ids, size=2000, replace=False)]
    catalog.delete_images(record.id, gone)
    kept = sorted(set(ids) - set(gone))
    moved = [int(i) for i in rng.choice(kept, size=1000, replace=False)]
    catalog.put_embeddings(record.id, MODEL, moved, _rows(len(moved), seed=3))
    catalog.add_images(record.id, _items(_rows(500, seed=4), 20_000))
    head = catalog.collection_seq(record.id)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "VIZDEX_DATA_DIR": str(data),
        "VIZDEX_VECTOR_STORE": str(lite),
        "VIZDEX_MILVUS_INDEX": "flat",
        "VIZDEX_MILVUS_BATCH": str(BATCH),
        "VIZDEX_MILVUS_LEASE_S": "2",  # the restart waits out the killed follower's lease
    }
    key = f"lite:{lite.resolve()}"

    follower = _follow(env)
    try:
        deadline = time.monotonic() + 300
        while True:
            position = catalog.store_position(key, record.id, MODEL)
            # Killed after its first batch: on a fast machine the whole feed takes a second.
            if position is not None and position.applied_seq >= BATCH:
                break
            assert follower.poll() is None, follower.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the follower made no progress"
            time.sleep(0.02)
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    killed_at = catalog.store_position(key, record.id, MODEL)
    assert killed_at is not None and killed_at.applied_seq < head  # it was stopped part-way
    assert killed_at.applied_seq % BATCH == 0  # watermarks only at batch ends

    restarted = _follow(env)
    _, err = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, err.decode()[-2000:]
    position = catalog.store_position(key, record.id, MODEL)
    assert position is not None and position.applied_seq == head

    # Only now open the lite file here (it is one process's at a time).
    milvus_settings = replace(settings.index, vector_store=str(lite))
    store = open_milvus(catalog, milvus_settings)
    try:
        assert isinstance(store, MilvusVectorStore)
        expected = np.sort(
            np.concatenate(
                [batch[0] for batch in catalog.iter_embeddings(record.id, MODEL, upto_seq=head)]
            )
        )
        held = store.ids(record, MODEL)
        assert len(held) == len(expected) and np.array_equal(held, expected)
        sample = list(dict.fromkeys(moved[:50] + kept[:50]))  # re-embedded and untouched
        stored = store.vectors(record, MODEL, sample)
        _, truth = catalog.get_vectors(record.id, MODEL, sample)
        np.testing.assert_allclose(np.stack([stored[i] for i in sample]), truth, atol=1e-6)
    finally:
        store.close()
        catalog.close()
