"""The catalog: collections, images, their vectors and ingestion jobs, in one SQL database.

It is the source of truth; vector indexes are caches rebuilt and replayed from it. Every method is
one transaction, and returns only after it committed. Write transactions lock their collection's
row first (SQLite: ``BEGIN IMMEDIATE``), so writers of one collection run one at a time and the
sequence numbers they hand out become visible in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import ColumnElement, Engine, Select, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vizdex.core.errors import InvalidInputError
from vizdex.search.db import create_catalog_engine, writer
from vizdex.search.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ImageNotFoundError,
    JobNotFoundError,
)
from vizdex.search.models import Collection, Embedding, EmbeddingTombstone, Image, Job, utcnow
from vizdex.search.records import (
    AddedImage,
    ChangeSet,
    CollectionRecord,
    ImageFilter,
    ImageRecord,
    ImageStatus,
    JobFailure,
    JobRecord,
    JobState,
    NewImage,
    SourceKind,
)
from vizdex.search.schema import ensure_schema
from vizdex.search.settings import CatalogSettings

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Well under SQLite's bound-parameter limit, and keeps IN lists cheap everywhere.
CHUNK = 5000
# A job keeps its first failures with reasons; the counters stay exact beyond that.
MAX_JOB_FAILURES = 1000


T = TypeVar("T")


def _chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _vector(value: Any, *, model: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(f"vector for model {model!r} must be one non-empty row")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"vector for model {model!r} has NaN or infinite values")
    return np.ascontiguousarray(array)


def _json_object(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        plain = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{what} must be a JSON object: {error}") from None
    if not isinstance(plain, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return plain


def _decode(rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
    return ids, vectors.reshape(len(rows), -1)


def _collection_record(row: Collection) -> CollectionRecord:
    return CollectionRecord(
        id=row.id,
        name=row.name,
        models=tuple(row.models),
        index_factory=row.index_factory,
        exact_max=row.exact_max,
        last_seq=row.last_seq,
        created_at=row.created_at,
    )


def _image_record(row: Image) -> ImageRecord:
    return ImageRecord(
        id=row.id,
        collection_id=row.collection_id,
        sha256=row.sha256,
        source_kind=SourceKind(row.source_kind),
        source_uri=row.source_uri,
        original_name=row.original_name,
        width=row.width,
        height=row.height,
        format=row.format,
        byte_size=row.byte_size,
        source_size=row.source_size,
        source_mtime_ns=row.source_mtime_ns,
        thumbnail_path=row.thumbnail_path,
        metadata=dict(row.user_metadata),
        status=ImageStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _job_record(row: Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        collection_id=row.collection_id,
        kind=row.kind,
        source=row.source,
        state=JobState(row.state),
        total=row.total,
        done=row.done,
        skipped=row.skipped,
        failed=row.failed,
        failures=tuple(JobFailure(**failure) for failure in row.failures),
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _filter_clauses(filters: ImageFilter) -> list[ColumnElement[bool]]:
    """SQL that narrows to the filter; exact typed equality is re-checked by ImageFilter.matches."""
    clauses: list[ColumnElement[bool]] = []
    if filters.created_after is not None:
        clauses.append(Image.created_at >= filters.created_after)
    if filters.created_before is not None:
        clauses.append(Image.created_at < filters.created_before)
    for key, value in filters.metadata.items():
        element = Image.user_metadata[key]
        if isinstance(value, bool):
            clauses.append(element.as_boolean() == value)
        elif isinstance(value, str):
            clauses.append(element.as_string() == value)
        else:
            clauses.append(element.as_float() == float(value))
    return clauses


class Catalog:
    """Typed access to the catalog database; safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    @classmethod
    def open(cls, settings: CatalogSettings, *, script_location: Path | None = None) -> Catalog:
        """Open the catalog for the service: refuses a schema that does not match this code."""
        engine = create_catalog_engine(
            settings.database_url, busy_timeout_ms=settings.busy_timeout_ms
        )
        try:
            ensure_schema(
                engine, auto_upgrade=settings.auto_upgrade, script_location=script_location
            )
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _lock(session: Session, collection_id: int) -> Collection:
        row = session.scalars(
            select(Collection).where(Collection.id == collection_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise CollectionNotFoundError(f"collection {collection_id} does not exist")
        return row

    @staticmethod
    def _allocate(row: Collection, count: int) -> int:
        """Reserve ``count`` sequence numbers; returns the first."""
        first = row.last_seq + 1
        row.last_seq = row.last_seq + count
        return first

    # -- collections ---------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        models: Sequence[str],
        *,
        index_factory: str | None = None,
        exact_max: int | None = None,
    ) -> CollectionRecord:
        if not COLLECTION_NAME.match(name):
            raise InvalidInputError(
                f"collection name {name!r} must be 1-100 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        models = list(models)
        if not models or len(set(models)) != len(models) or not all(models):
            raise InvalidInputError("a collection needs one or more distinct model names")
        if exact_max is not None and exact_max < 0:
            raise InvalidInputError("exact_max must be >= 0")
        row = Collection(
            name=name,
            models=models,
            index_factory=index_factory or None,
            exact_max=exact_max,
            last_seq=0,
        )
        try:
            with self._write() as session:
                if session.scalar(select(Collection.id).where(Collection.name == name)):
                    raise CollectionExistsError(f"collection {name!r} already exists")
                session.add(row)
        except IntegrityError:
            raise CollectionExistsError(f"collection {name!r} already exists") from None
        return _collection_record(row)

    def get_collection(self, name: str) -> CollectionRecord:
        with self._read() as session:
            row = session.scalars(select(Collection).where(Collection.name == name)).one_or_none()
            if row is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            return _collection_record(row)

    def get_collection_by_id(self, collection_id: int) -> CollectionRecord:
        with self._read() as session:
            row = session.get(Collection, collection_id)
            if row is None:
                raise CollectionNotFoundError(f"collection {collection_id} does not exist")
            return _collection_record(row)

    def list_collections(self) -> list[CollectionRecord]:
        with self._read() as session:
            rows = session.scalars(select(Collection).order_by(Collection.name)).all()
            return [_collection_record(row) for row in rows]

    def delete_collection(self, name: str) -> CollectionRecord:
        """Deletes the collection with its images, vectors, tombstones and jobs."""
        with self._write() as session:
            row = session.scalars(select(Collection).where(Collection.name == name)).one_or_none()
            if row is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            record = _collection_record(row)
            # Explicit child deletes: correct even where the backend does not enforce cascades.
            for table in (Embedding, EmbeddingTombstone, Job, Image):
                session.execute(delete(table).where(table.collection_id == row.id))
            session.delete(row)
        return record

    def collection_seq(self, collection_id: int) -> int:
        """The last sequence number handed out in this collection (0 when nothing was written)."""
        with self._read() as session:
            seq = session.scalar(select(Collection.last_seq).where(Collection.id == collection_id))
        if seq is None:
            raise CollectionNotFoundError(f"collection {collection_id} does not exist")
        return int(seq)

    def count_images(self, collection_id: int) -> int:
        with self._read() as session:
            count = session.scalar(
                select(func.count()).select_from(Image).where(Image.collection_id == collection_id)
            )
        return int(count or 0)

    # -- images --------------------------------------------------------------------------------

    def _check_dims(
        self, session: Session, collection_id: int, model: str, vectors: Iterable[np.ndarray]
    ) -> None:
        stored = session.scalar(
            select(Embedding.dim)
            .where(Embedding.collection_id == collection_id, Embedding.model == model)
            .limit(1)
        )
        dims = {vector.shape[0] for vector in vectors}
        if stored is not None:
            dims.add(int(stored))
        if len(dims) > 1:
            raise InvalidInputError(
                f"vectors for model {model!r} must all have the same dimension, got {sorted(dims)}"
            )

    def add_images(self, collection_id: int, items: Sequence[NewImage]) -> list[AddedImage]:
        """Adds images with one vector per collection model, in one transaction.

        An image whose sha256 is already in the collection (or earlier in ``items``) is not added
        again: its outcome carries the existing id and ``created=False``.
        """
        if not items:
            return []
        with self._write() as session:
            collection = self._lock(session, collection_id)
            models = list(collection.models)
            prepared: list[tuple[NewImage, dict[str, Any], dict[str, np.ndarray]]] = []
            for item in items:
                prepared.append((item, *self._prepare(item, models)))
            for model in models:
                self._check_dims(
                    session, collection_id, model, (vectors[model] for _, _, vectors in prepared)
                )
            shas = list({row["sha256"] for _, row, _ in prepared})
            existing: dict[str, int] = {}
            for chunk in _chunks(shas):
                existing.update(
                    session.execute(
                        select(Image.sha256, Image.id).where(
                            Image.collection_id == collection_id, Image.sha256.in_(chunk)
                        )
                    ).all()
                )
            new_rows: list[dict[str, Any]] = []
            new_vectors: list[dict[str, np.ndarray]] = []
            first_index: dict[str, int] = {}
            for _, row, vectors in prepared:
                if row["sha256"] in existing or row["sha256"] in first_index:
                    continue
                first_index[row["sha256"]] = len(new_rows)
                new_rows.append({**row, "collection_id": collection_id})
                new_vectors.append(vectors)
            new_ids: list[int] = []
            if new_rows:
                new_ids = list(
                    session.scalars(
                        insert(Image).returning(Image.id, sort_by_parameter_order=True),
                        new_rows,
                    )
                )
                seq = self._allocate(collection, len(new_rows) * len(models))
                embeddings = []
                for image_id, vectors in zip(new_ids, new_vectors, strict=True):
                    for model in models:
                        embeddings.append(
                            {
                                "image_id": image_id,
                                "model": model,
                                "collection_id": collection_id,
                                "seq": seq,
                                "dim": vectors[model].shape[0],
                                "vector": vectors[model].tobytes(),
                            }
                        )
                        seq += 1
                session.execute(insert(Embedding), embeddings)
        outcomes: list[AddedImage] = []
        created: set[str] = set()
        for _, row, _ in prepared:
            sha = row["sha256"]
            if sha in existing:
                outcomes.append(AddedImage(id=existing[sha], created=False))
            else:
                outcomes.append(
                    AddedImage(id=new_ids[first_index[sha]], created=sha not in created)
                )
                created.add(sha)
        return outcomes

    @staticmethod
    def _prepare(
        item: NewImage, models: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        sha = item.sha256.lower()
        if not SHA256.match(sha):
            raise InvalidInputError(f"sha256 {item.sha256!r} is not 64 hex digits")
        missing = sorted(set(models) - set(item.vectors))
        extra = sorted(set(item.vectors) - set(models))
        if missing or extra:
            raise InvalidInputError(
                f"image {item.original_name or sha[:12]!r} needs exactly one vector per collection "
                f"model {list(models)}; missing {missing}, unexpected {extra}"
            )
        if item.width < 0 or item.height < 0 or item.byte_size < 0:
            raise InvalidInputError("width, height and byte size must be >= 0")
        row = {
            "sha256": sha,
            "source_kind": SourceKind(item.source_kind).value,
            "source_uri": item.source_uri,
            "original_name": item.original_name,
            "width": item.width,
            "height": item.height,
            "format": item.format,
            "byte_size": item.byte_size,
            "source_size": item.source_size,
            "source_mtime_ns": item.source_mtime_ns,
            "thumbnail_path": item.thumbnail_path,
            "user_metadata": _json_object(item.metadata, "image metadata"),
            "status": ImageStatus(item.status).value,
        }
        vectors = {model: _vector(item.vectors[model], model=model) for model in models}
        return row, vectors

    def delete_images(self, collection_id: int, image_ids: Iterable[int]) -> list[int]:
        """Deletes images (and their vectors, leaving tombstones); returns the ids that existed."""
        wanted = sorted({int(image_id) for image_id in image_ids})
        if not wanted:
            return []
        with self._write() as session:
            collection = self._lock(session, collection_id)
            found: list[int] = []
            for chunk in _chunks(wanted):
                found.extend(
                    session.scalars(
                        select(Image.id).where(
                            Image.collection_id == collection_id, Image.id.in_(chunk)
                        )
                    )
                )
            found.sort()
            stale: list[tuple[int, str]] = []
            for chunk in _chunks(found):
                stale.extend(
                    session.execute(
                        select(Embedding.image_id, Embedding.model).where(
                            Embedding.image_id.in_(chunk)
                        )
                    )
                )
            self._tombstone(session, collection, sorted(stale))
            for chunk in _chunks(found):
                session.execute(delete(Embedding).where(Embedding.image_id.in_(chunk)))
                session.execute(delete(Image).where(Image.id.in_(chunk)))
        return found

    def _tombstone(
        self, session: Session, collection: Collection, stale: Sequence[tuple[int, str]]
    ) -> None:
        if not stale:
            return
        seq = self._allocate(collection, len(stale))
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

    def put_embeddings(
        self, collection_id: int, model: str, image_ids: Sequence[int], vectors: np.ndarray
    ) -> None:
        """Sets (adds or replaces) one model's vectors of existing images (re-encoding)."""
        ids = [int(image_id) for image_id in image_ids]
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise InvalidInputError("vectors must be a [len(image_ids), dim] matrix")
        if len(set(ids)) != len(ids):
            raise InvalidInputError("image ids must be distinct")
        if not ids:
            return
        rows = [_vector(row, model=model) for row in matrix]
        with self._write() as session:
            collection = self._lock(session, collection_id)
            if model not in collection.models:
                raise InvalidInputError(
                    f"collection {collection.name!r} is not embedded with model {model!r}"
                )
            self._check_dims(session, collection_id, model, rows)
            known: set[int] = set()
            replaced: set[int] = set()
            for chunk in _chunks(ids):
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
            stale = [(image_id, model) for image_id in sorted(replaced)]
            self._tombstone(session, collection, stale)
            for chunk in _chunks(sorted(replaced)):
                session.execute(
                    delete(Embedding).where(Embedding.model == model, Embedding.image_id.in_(chunk))
                )
            seq = self._allocate(collection, len(ids))
            session.execute(
                insert(Embedding),
                [
                    {
                        "image_id": image_id,
                        "model": model,
                        "collection_id": collection_id,
                        "seq": seq + offset,
                        "dim": row.shape[0],
                        "vector": row.tobytes(),
                    }
                    for offset, (image_id, row) in enumerate(zip(ids, rows, strict=True))
                ],
            )

    def update_image(
        self,
        collection_id: int,
        image_id: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        thumbnail_path: str | None = None,
        status: ImageStatus | None = None,
    ) -> ImageRecord:
        """Changes what no index holds (metadata, thumbnail, status): no sequence number."""
        with self._write() as session:
            row = session.get(Image, image_id)
            if row is None or row.collection_id != collection_id:
                raise ImageNotFoundError(f"image {image_id} does not exist in this collection")
            if metadata is not None:
                row.user_metadata = _json_object(metadata, "image metadata")
            if thumbnail_path is not None:
                row.thumbnail_path = thumbnail_path
            if status is not None:
                row.status = ImageStatus(status).value
            row.updated_at = utcnow()
            session.flush()
            return _image_record(row)

    def get_image(self, collection_id: int, image_id: int) -> ImageRecord:
        images = self.get_images(collection_id, [image_id])
        if image_id not in images:
            raise ImageNotFoundError(f"image {image_id} does not exist in this collection")
        return images[image_id]

    def get_images(self, collection_id: int, image_ids: Iterable[int]) -> dict[int, ImageRecord]:
        """The images among ``image_ids`` that exist in the collection, by id."""
        ids = sorted({int(image_id) for image_id in image_ids})
        found: dict[int, ImageRecord] = {}
        with self._read() as session:
            for chunk in _chunks(ids):
                for row in session.scalars(
                    select(Image).where(Image.collection_id == collection_id, Image.id.in_(chunk))
                ):
                    found[row.id] = _image_record(row)
        return found

    def find_by_sha256(self, collection_id: int, hashes: Iterable[str]) -> dict[str, int]:
        wanted = sorted({value.lower() for value in hashes})
        found: dict[str, int] = {}
        with self._read() as session:
            for chunk in _chunks(wanted):
                found.update(
                    session.execute(
                        select(Image.sha256, Image.id).where(
                            Image.collection_id == collection_id, Image.sha256.in_(chunk)
                        )
                    ).all()
                )
        return found

    def find_by_source(self, collection_id: int, source_uri: str) -> list[ImageRecord]:
        """Images ingested from this path or URL (the indexer compares size and mtime)."""
        with self._read() as session:
            rows = session.scalars(
                select(Image)
                .where(Image.collection_id == collection_id, Image.source_uri == source_uri)
                .order_by(Image.id)
            ).all()
            return [_image_record(row) for row in rows]

    def list_images(
        self, collection_id: int, *, after_id: int = 0, limit: int = 100
    ) -> list[ImageRecord]:
        """Images in id order, keyset-paginated by ``after_id``."""
        with self._read() as session:
            rows = session.scalars(
                select(Image)
                .where(Image.collection_id == collection_id, Image.id > after_id)
                .order_by(Image.id)
                .limit(max(1, limit))
            ).all()
            return [_image_record(row) for row in rows]

    def filter_image_ids(
        self,
        collection_id: int,
        filters: ImageFilter,
        *,
        among: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[int]:
        """Ids of the collection's images matching ``filters`` (optionally only ``among`` these)."""
        base: Select[int] = (
            select(Image.id)
            .where(Image.collection_id == collection_id, *_filter_clauses(filters))
            .order_by(Image.id)
        )
        with self._read() as session:
            if among is None:
                query = base if limit is None else base.limit(limit)
                return list(session.scalars(query))
            found: list[int] = []
            for chunk in _chunks(sorted({int(i) for i in among})):
                found.extend(session.scalars(base.where(Image.id.in_(chunk))))
            return found[:limit] if limit is not None else found

    # -- vectors -------------------------------------------------------------------------------

    def get_vectors(
        self, collection_id: int, model: str, image_ids: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those ``image_ids`` that have a ``model`` vector, in input order."""
        order = {int(image_id): position for position, image_id in enumerate(image_ids)}
        rows: list[tuple[int, bytes]] = []
        with self._read() as session:
            for chunk in _chunks(list(order)):
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
        return _decode(rows)

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
            yield _decode([(image_id, vector) for _, image_id, vector in rows])

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
        added_ids, added_vectors = _decode(added)
        return ChangeSet(
            after_seq=after_seq,
            upto_seq=upto_seq,
            removed_ids=np.unique(np.asarray(removed, dtype=np.int64)),
            added_ids=added_ids,
            added_vectors=added_vectors,
        )

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

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self, collection_id: int, *, kind: str, source: str | None = None, total: int = 0
    ) -> JobRecord:
        row = Job(
            collection_id=collection_id,
            kind=kind,
            source=source,
            state=JobState.PENDING.value,
            total=max(0, total),
            done=0,
            skipped=0,
            failed=0,
            failures=[],
        )
        with self._write() as session:
            self._lock(session, collection_id)
            session.add(row)
            session.flush()
            return _job_record(row)

    def get_job(self, job_id: int) -> JobRecord:
        with self._read() as session:
            row = session.get(Job, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            return _job_record(row)

    def list_jobs(
        self,
        *,
        collection_id: int | None = None,
        state: JobState | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        query = select(Job).order_by(Job.id.desc()).limit(max(1, limit))
        if collection_id is not None:
            query = query.where(Job.collection_id == collection_id)
        if state is not None:
            query = query.where(Job.state == JobState(state).value)
        with self._read() as session:
            return [_job_record(row) for row in session.scalars(query)]

    def record_job_progress(
        self,
        job_id: int,
        *,
        total: int | None = None,
        done: int = 0,
        skipped: int = 0,
        failures: Sequence[JobFailure] = (),
    ) -> JobRecord:
        """Adds to a job's counters (``done``, ``skipped``, one ``failed`` per failure)."""
        with self._write() as session:
            row = session.get(Job, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            if total is not None:
                row.total = max(0, total)
            row.done += max(0, done)
            row.skipped += max(0, skipped)
            row.failed += len(failures)
            room = MAX_JOB_FAILURES - len(row.failures)
            if failures and room > 0:
                row.failures = [
                    *row.failures,
                    *(
                        {"item": f.item, "code": f.code, "message": f.message}
                        for f in failures[:room]
                    ),
                ]
            row.updated_at = utcnow()
            session.flush()
            return _job_record(row)

    def set_job_state(self, job_id: int, state: JobState, *, error: str | None = None) -> JobRecord:
        state = JobState(state)
        with self._write() as session:
            row = session.get(Job, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            row.state = state.value
            if error is not None:
                row.error = error
            now = utcnow()
            row.updated_at = now
            row.finished_at = now if state.finished else None
            session.flush()
            return _job_record(row)
