"""Where an index build reads its vectors from: batches, never the whole collection at once.

A build reads its source twice: once for a random sample (what the IVF lists and PQ codebooks
are trained on, plus the queries that tune nprobe), then once for every vector, which goes into
the index and the exact-vector file one batch at a time. Its memory is the index it builds, the
sample, and one batch: 10 million 512-d vectors would be 20 GB of float32 held at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from vizdex.search.catalog import Catalog

DEFAULT_BATCH = 65_536  # rows per batch: 128 MiB of float32 at 512 dimensions

Batch = tuple[np.ndarray, np.ndarray]  # (int64 ids [n], vectors [n, dim])


class VectorSource(Protocol):
    """Vectors to build an index from. ``count`` may exceed what a pass yields (rows deleted
    since it was counted); each ``batches()`` call is a new pass, in the same order."""

    @property
    def count(self) -> int: ...

    def batches(self) -> Iterator[Batch]: ...


class ArraySource:
    """Vectors already in memory (tests, benchmarks, small builds), read in slices."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, batch_size: int = DEFAULT_BATCH):
        self._ids = ids
        self._vectors = vectors
        self._batch = max(1, batch_size)

    @property
    def count(self) -> int:
        return len(self._ids)

    def batches(self) -> Iterator[Batch]:
        for start in range(0, len(self._ids), self._batch):
            stop = start + self._batch
            yield self._ids[start:stop], self._vectors[start:stop]


class CatalogSource:
    """One model's vectors of one collection up to ``upto_seq``, read from the catalog in
    batches of ``batch_size`` rows (each its own short read)."""

    def __init__(
        self,
        catalog: Catalog,
        collection_id: int,
        model: str,
        *,
        upto_seq: int,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self._catalog = catalog
        self._collection_id = collection_id
        self._model = model
        self._upto = upto_seq
        self._batch = max(1, batch_size)
        # Counted at the catalog's head: rows at or before upto_seq are a subset of those.
        self._count = catalog.embedding_summary(collection_id, model)[1]

    @property
    def count(self) -> int:
        return self._count

    def batches(self) -> Iterator[Batch]:
        return self._catalog.iter_embeddings(
            self._collection_id, self._model, upto_seq=self._upto, batch_size=self._batch
        )

    def dim(self) -> int | None:
        """The vectors' dimension (one row read), or None when the source has none."""
        reader = self._catalog.iter_embeddings(
            self._collection_id, self._model, upto_seq=self._upto, batch_size=1
        )
        first = next(reader, None)  # the unfinished reader holds no transaction: see its docs
        return None if first is None else int(first[1].shape[1])


def sample_rows(source: VectorSource, positions: np.ndarray, dim: int) -> Batch:
    """The rows at sorted ``positions`` of one pass over ``source`` (positions past its end are
    skipped): one pass, holding one batch and the sample."""
    ids = np.zeros(len(positions), dtype=np.int64)
    vectors = np.zeros((len(positions), dim), dtype=np.float32)
    taken = 0
    offset = 0
    for batch_ids, batch_vectors in source.batches():
        stop = offset + len(batch_ids)
        end = int(np.searchsorted(positions, stop))
        local = positions[taken:end] - offset
        ids[taken:end] = batch_ids[local]
        vectors[taken:end] = batch_vectors[local]
        taken, offset = end, stop
        if taken == len(positions):
            break
    return ids[:taken], vectors[:taken]
