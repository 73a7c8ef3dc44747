"""Where Milvus tests put their vectors: a milvus-lite file (in-process, the default), or a Milvus
server when ``VIZDEX_TEST_MILVUS_URI`` names one (``http://127.0.0.1:19530``, e.g. the standalone
server of the ``milvus`` PyPI package). On a server each catalog gets its own collection-name
prefix, derived from the lite path the test would have used, so tests never see each other's
collections; two services sharing one lite file share one prefix, as they share one catalog.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from vizdex.search.records import NewImage
from vizdex.search.service import SearchService
from vizdex.search.settings import IndexSettings, SearchSettings

SERVER_ENV = "VIZDEX_TEST_MILVUS_URI"
MODEL = "m"
DIM = 32
COLORS = ("red", "green", "blue")


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def items(vectors: np.ndarray, first: int) -> list[NewImage]:
    made = []
    for offset, vector in enumerate(vectors):
        key = first + offset
        metadata: dict[str, object] = {"color": COLORS[key % 3], "n": key, "odd": key % 2 == 1}
        if key % 331 == 0:
            metadata["rare tag"] = "yes"  # 16 images of 5,000, a key with a space
        made.append(
            NewImage(
                sha256=f"{key:064x}",
                width=8,
                height=8,
                format="png",
                byte_size=10,
                vectors={MODEL: vector},
                metadata=metadata,
            )
        )
    return made


def milvus_server() -> str | None:
    """The Milvus server the suite runs against, None for milvus-lite."""
    return os.environ.get(SERVER_ENV) or None


def milvus_index_settings(index: IndexSettings, lite: Path, index_type: str) -> IndexSettings:
    """``index`` with Milvus as its vector store: ``lite`` as a milvus-lite file, or the server
    with a prefix of its own."""
    server = milvus_server()
    if server is None:
        return replace(index, vector_store=str(lite), milvus_index=index_type)
    prefix = "t" + hashlib.sha1(str(lite.resolve()).encode()).hexdigest()[:16]
    return replace(index, vector_store=server, milvus_index=index_type, milvus_prefix=prefix)


def milvus_device() -> str:
    """What ``IndexInfo.device`` says for the store in use."""
    return "milvus-lite" if milvus_server() is None else "milvus"


def open_pair(settings: SearchSettings, lite: Path, index: str) -> tuple[SearchService, ...]:
    """Two services on one catalog: local FAISS, and Milvus (``lite``, or the test server)."""
    faiss_settings = replace(settings, index=replace(settings.index, device="cpu"))
    milvus_settings = replace(
        settings,
        index=milvus_index_settings(replace(settings.index, device="cpu"), lite, index),
    )
    return SearchService.open(faiss_settings, {}), SearchService.open(milvus_settings, {})
