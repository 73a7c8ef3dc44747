"""Vectors and tombstones: what the indexes are built and replayed from, by sequence number.

Every vector written and every vector that leaves (image deleted, or re-embedded) takes a number
from its collection's counter; ``changes`` between two numbers is what an index applies to catch up.

Vectors are stored as float16 (``search.float16``: half the bytes of float32, unit vectors come
back unit length); they are handed out as float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from vizdex.core.errors import InvalidInputError
from vizdex.core.precision import Precision
from vizdex.search.catalog.precisions import settle_precisions
from vizdex.search.catalog.session import CatalogSession, allocate, chunks
from vizdex.search.errors import CollectionNotFoundError, ImageNotFoundError
from vizdex.search.float16 import MAX as FLOAT16_MAX
from vizdex.search.float16 import from_float16, to_float16
from vizdex.search.models import Collection, Embedding, EmbeddingTombstone, Image, utcnow
from vizdex.search.records import ChangeSet


def vector(value: Any, *, model: str) -> np.ndarray:
    """One finite float32 row, or InvalidInputError."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(f"vector for model {model!r} must be one non-empty row")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"vector for model {model!r} has NaN or infinite values")
    if np.abs(array).max() > FLOAT16_MAX:
        raise InvalidInputError(
            f"vector for model {model!r} has values beyond ±{FLOAT16_MAX:g} (stored as float16)"
        )
    return np.ascontiguousarray(array)


def encode(row: np.ndarray) -> bytes:
    """One vector as the catalog stores it: little-endian float16."""
    return to_float16(row).tobytes()


def decode(rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f2")
    return ids, from_float16(vectors.reshape(len(rows), -1))


def check_dims(
    session: Session, collection_id: int, model: str, vectors: Iterable[np.ndarray]
) -> None:
    """One dimension per model and collection: the new vectors' and the stored ones'."""
    stored = session.scalar(
        select(Embedding.dim)
        .where(Embedding.collection_id == collection_id, Embedding.model == model)
        .limit(1)
    )
    dims = {row.shape[0] for row in vectors}
    if stored is not None:
        dims.add(int(stored))
    if len(dims) > 1:
        raise InvalidInputError(
            f"vectors for model {model!r} must all have the same dimension, got {sorted(dims)}"
        )


def tombstone(session: Session, collection: Collection, stale: Sequence[tuple[int, str]]) -> None:
    """Records that these (image id, model) vectors left, each with a sequence number."""
    if not stale:
        return
    seq = allocate(collection, len(stale))
    now = utcnow()
    session.execute(
        insert(EmbeddingTombstone),
        [
            {
                "collection_id": collection.id,
                "model": model,
                "image_id": image_id,
                "seq": seq + offset,
                "deleted_at": now,
            }
            for offset, (image_id, model) in enumerate(stale)
        ],
    )


class VectorsPart(CatalogSession):
    def put_embeddings(
        self,
        collection_id: int,
        model: str,
        image_ids: Sequence[int],
        vectors: np.ndarray,
        *,
        precision: Precision | None = None,
    ) -> None:
        """Sets (adds or replaces) one model's vectors of existing images (re-encoding, a
        back-fill). ``precision``: what computed them, checked against and recorded with the
        collection's (``catalog.precisions``); None records nothing."""
        ids = [int(image_id) for image_id in image_ids]
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise InvalidInputError("vectors must be a [len(image_ids), dim] matrix")
        if len(set(ids)) != len(ids):
            raise InvalidInputError("image ids must be distinct")
        if not ids:
            return
        rows = [vector(row, model=model) for row in matrix]
        with self._write() as session:
            collection = self._lock(session, collection_id)
            if model not in collection.models:
                raise InvalidInputError(
                    f"collection {collection.name!r} is not embedded with model {model!r}"
                )
            check_dims(session, collection_id, model, rows)
            if precision is not None:
                settle_precisions(session, collection, {model: precision}, record=True)
            known: set[int] = set()
            replaced: set[int] = set()
            for chunk in chunks(ids):
                known.update(
                    session.scalars(
                        select(Image.id).where(
                            Image.collection_id == collection_id, Image.id.in_(chunk)
                        )
                    )
                )
                replaced.update(
                    session.scalars(
                        select(Embedding.image_id).where(
                            Embedding.model == model, Embedding.image_id.in_(chunk)
                        )
                    )
                )
            missing = sorted(set(ids) - known)
            if missing:
                raise ImageNotFoundError(
                    f"images {missing[:10]} are not in collection {collection.name!r}",
                    image_ids=missing[:100],
                )
            tombstone(session, collection, [(image_id, model) for image_id in sorted(replaced)])
            for chunk in chunks(sorted(replaced)):
                session.execute(
                    delete(Embedding).where(Embedding.model == model, Embedding.image_id.in_(chunk))
                )
            seq = allocate(collection, len(ids))
            session.execute(
                insert(Embedding),
                [
                    {
                        "image_id": image_id,
                        "model": model,
                        "collection_id": collection_id,
                        "seq": seq + offset,
                        "dim": row.shape[0],
                        "vector": encode(row),
                    }
                    for offset, (image_id, row) in enumerate(zip(ids, rows, strict=True))
                ],
            )

    def get_vectors(
        self, collection_id: int, model: str, image_ids: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those ``image_ids`` that have a ``model`` vector, in input order."""
        order = {int(image_id): position for position, image_id in enumerate(image_ids)}
        rows: list[tuple[int, bytes]] = []
        with self._read() as session:
            for chunk in chunks(list(order)):
                rows.extend(
                    session.execute(
                        select(Embedding.image_id, Embedding.vector).where(
                            Embedding.collection_id == collection_id,
                            Embedding.model == model,
                            Embedding.image_id.in_(chunk),
                        )
                    )
                )
        rows.sort(key=lambda row: order[row[0]])
        return decode(rows)

    def iter_embeddings(
        self, collection_id: int, model: str, *, upto_seq: int, batch_size: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``model`` vector with ``seq <= upto_seq``, in seq order, as (ids, vectors) batches.

        Each batch is its own short read, so a rebuild never pins an old snapshot of the database.
        Rows deleted or re-embedded meanwhile left tombstones above ``upto_seq``: replaying from
        ``upto_seq`` afterwards makes the result exact.
        """
        last = 0
        while True:
            with self._read() as session:
                rows = list(
                    session.execute(
                        select(Embedding.seq, Embedding.image_id, Embedding.vector)
                        .where(
                            Embedding.collection_id == collection_id,
                            Embedding.model == model,
                            Embedding.seq > last,
                            Embedding.seq <= upto_seq,
                        )
                        .order_by(Embedding.seq)
                        .limit(batch_size)
                    )
                )
            if not rows:
                return
            last = int(rows[-1][0])
            yield decode([(image_id, data) for _, image_id, data in rows])

    def changes(
        self, collection_id: int, model: str, *, after_seq: int, upto_seq: int
    ) -> ChangeSet:
        """What changed for one model's index between two sequence numbers."""
        with self._read() as session:
            removed = list(
                session.scalars(
                    select(EmbeddingTombstone.image_id)
                    .where(
                        EmbeddingTombstone.collection_id == collection_id,
                        EmbeddingTombstone.model == model,
                        EmbeddingTombstone.seq > after_seq,
                        EmbeddingTombstone.seq <= upto_seq,
                    )
                    .order_by(EmbeddingTombstone.seq)
                )
            )
            added = list(
                session.execute(
                    select(Embedding.image_id, Embedding.vector)
                    .where(
                        Embedding.collection_id == collection_id,
                        Embedding.model == model,
                        Embedding.seq > after_seq,
                        Embedding.seq <= upto_seq,
                    )
                    .order_by(Embedding.seq)
                )
            )
        added_ids, added_vectors = decode(added)
        return ChangeSet(
            after_seq=after_seq,
            upto_seq=upto_seq,
            removed_ids=np.unique(np.asarray(removed, dtype=np.int64)),
            added_ids=added_ids,
            added_vectors=added_vectors,
        )

    def metadata_changes(self, collection_id: int, *, after_seq: int, upto_seq: int) -> list[int]:
        """Images whose metadata changed (or that were asked to be mirrored again) between two
        sequence numbers, by their last such change: what a store mirroring metadata re-reads."""
        with self._read() as session:
            return [
                int(image_id)
                for image_id in session.scalars(
                    select(Image.id).where(
                        Image.collection_id == collection_id,
                        Image.metadata_seq > after_seq,
                        Image.metadata_seq <= upto_seq,
                    )
                )
            ]

    def highest_image_id(self, collection_id: int) -> int:
        """The largest image id the collection's change feed has named (a present image, or a
        tombstone's): no store following the feed holds a larger one. 0 when none."""
        with self._read() as session:
            present = session.scalar(
                select(func.max(Image.id)).where(Image.collection_id == collection_id)
            )
            gone = session.scalar(
                select(func.max(EmbeddingTombstone.image_id)).where(
                    EmbeddingTombstone.collection_id == collection_id
                )
            )
        return max(int(present or 0), int(gone or 0))

    def requeue_images(self, collection_id: int, model: str, image_ids: Sequence[int]) -> int:
        """Puts these images into the change feed again, as they are now: a present image by a
        new ``metadata_seq`` (the follower re-reads its row and vector), a deleted one by a new
        tombstone. A fenced follower asks this for the batch it wrote too late, so the current
        follower writes the catalog's state over it. Returns the last sequence number taken
        (0 when the collection is gone)."""
        with self._write() as session:
            collection = self._lock_if_present(session, collection_id)
            if collection is None or not image_ids:
                return 0
            wanted = sorted({int(i) for i in image_ids})
            present: set[int] = set()
            for chunk in chunks(wanted):
                mine = Image.collection_id == collection_id
                present.update(session.scalars(select(Image.id).where(mine, Image.id.in_(chunk))))
            for image_id in sorted(present):
                seq = allocate(collection, 1)
                session.execute(update(Image).where(Image.id == image_id).values(metadata_seq=seq))
            tombstone(session, collection, [(i, model) for i in wanted if i not in present])
            return int(collection.last_seq)

    def embedding_summary(self, collection_id: int, model: str) -> tuple[int, int, int]:
        """(last_seq, count, sum of ids) in one statement, so the three agree with each other."""
        mine = (Embedding.collection_id == collection_id, Embedding.model == model)
        count = select(func.count()).select_from(Embedding).where(*mine).scalar_subquery()
        total = select(func.coalesce(func.sum(Embedding.image_id), 0)).where(*mine)
        with self._read() as session:
            row = session.execute(
                select(Collection.last_seq, count, total.scalar_subquery()).where(
                    Collection.id == collection_id
                )
            ).one_or_none()
        if row is None:
            raise CollectionNotFoundError(f"collection {collection_id} does not exist")
        return int(row[0]), int(row[1]), int(row[2])
