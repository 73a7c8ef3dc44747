"""Images: adding them with their vectors, deleting, retagging, finding; and their source paths.

Incremental scans look up hundreds of paths per query, and moved or touched files need their
path, size and mtime updated in place. Those columns are in no vector index, so such updates take
no sequence number; they still go through the one write path and lock their collection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, delete, insert, select, update

from vizdex.core.errors import InvalidInputError
from vizdex.core.precision import Precision
from vizdex.search.catalog.precisions import settle_precisions
from vizdex.search.catalog.rows import image_record, image_values, metadata_object
from vizdex.search.catalog.session import CatalogSession, allocate, chunks
from vizdex.search.catalog.vectors import check_dims, encode, tombstone, vector
from vizdex.search.errors import ImageNotFoundError
from vizdex.search.models import Embedding, Image, utcnow
from vizdex.search.records import (
    AddedImage,
    ImageFilter,
    ImageRecord,
    ImageStatus,
    NewImage,
    SourceRow,
    SourceUpdate,
)

PATHS_PER_QUERY = 500  # source paths per IN list: well under any backend's parameter limit


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


def _prepare(
    item: NewImage, models: Sequence[str], optional: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The image's row values and vectors. A model in ``optional`` (being back-filled) may be
    left out: a writer that read the collection before the model was added does not know it,
    and the back-fill gives the image its vector."""
    values = image_values(item)
    missing = sorted(set(models) - set(item.vectors) - set(optional))
    extra = sorted(set(item.vectors) - set(models))
    if missing or extra:
        raise InvalidInputError(
            f"image {item.original_name or values['sha256'][:12]!r} needs exactly one vector per "
            f"collection model {list(models)}; missing {missing}, unexpected {extra}"
        )
    return values, {
        model: vector(item.vectors[model], model=model) for model in models if model in item.vectors
    }


class ImagesPart(CatalogSession):
    # -- writes --------------------------------------------------------------------------------

    def add_images(
        self,
        collection_id: int,
        items: Sequence[NewImage],
        *,
        precisions: Mapping[str, Precision] | None = None,
    ) -> list[AddedImage]:
        """Adds images with one vector per collection model, in one transaction.

        An image whose sha256 is already in the collection (or earlier in ``items``) is not added
        again: its outcome carries the existing id and ``created=False``. ``precisions`` (model ->
        the precision that computed its vectors) are checked against and recorded with the
        collection's (``catalog.precisions``); None records nothing (vectors from elsewhere).
        """
        if not items:
            return []
        with self._write() as session:
            collection = self._lock(session, collection_id)
            models = list(collection.models)
            prepared = [_prepare(item, models, collection.model_states) for item in items]
            for model in models:
                check_dims(
                    session, collection_id, model, (v[model] for _, v in prepared if model in v)
                )
            if precisions:
                settle_precisions(session, collection, precisions, record=True)
            shas = list({row["sha256"] for row, _ in prepared})
            existing: dict[str, int] = {}
            for chunk in chunks(shas):
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
            for row, vectors in prepared:
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
                seq = allocate(collection, sum(len(vectors) for vectors in new_vectors))
                embeddings = []
                for image_id, vectors in zip(new_ids, new_vectors, strict=True):
                    for model in models:
                        if model not in vectors:
                            continue
                        embeddings.append(
                            {
                                "image_id": image_id,
                                "model": model,
                                "collection_id": collection_id,
                                "seq": seq,
                                "dim": vectors[model].shape[0],
                                "vector": encode(vectors[model]),
                            }
                        )
                        seq += 1
                if embeddings:
                    session.execute(insert(Embedding), embeddings)
        outcomes: list[AddedImage] = []
        created: set[str] = set()
        for row, _ in prepared:
            sha = row["sha256"]
            if sha in existing:
                outcomes.append(AddedImage(id=existing[sha], created=False))
            else:
                outcomes.append(
                    AddedImage(id=new_ids[first_index[sha]], created=sha not in created)
                )
                created.add(sha)
        return outcomes

    def delete_images(self, collection_id: int, image_ids: Iterable[int]) -> list[int]:
        """Deletes images (and their vectors, leaving tombstones); returns the ids that existed."""
        wanted = sorted({int(image_id) for image_id in image_ids})
        if not wanted:
            return []
        with self._write() as session:
            collection = self._lock(session, collection_id)
            found: list[int] = []
            for chunk in chunks(wanted):
                found.extend(
                    session.scalars(
                        select(Image.id).where(
                            Image.collection_id == collection_id, Image.id.in_(chunk)
                        )
                    )
                )
            found.sort()
            stale: list[tuple[int, str]] = []
            for chunk in chunks(found):
                stale.extend(
                    session.execute(
                        select(Embedding.image_id, Embedding.model).where(
                            Embedding.image_id.in_(chunk)
                        )
                    )
                )
            tombstone(session, collection, sorted(stale))
            for chunk in chunks(found):
                session.execute(delete(Embedding).where(Embedding.image_id.in_(chunk)))
                session.execute(delete(Image).where(Image.id.in_(chunk)))
        return found

    def update_image(
        self,
        collection_id: int,
        image_id: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        thumbnail_path: str | None = None,
        status: ImageStatus | None = None,
    ) -> ImageRecord:
        """Changes what no FAISS index holds (metadata, thumbnail, status). A metadata change
        takes a sequence number (``metadata_seq``): stores that mirror metadata follow it."""
        with self._write() as session:
            # The collection's counter first, as every write that takes a number (the lock
            # orders this change among the others; an unknown image rolls it back).
            seq = allocate(self._lock(session, collection_id), 1) if metadata is not None else None
            row = session.get(Image, image_id)
            if row is None or row.collection_id != collection_id:
                raise ImageNotFoundError(f"image {image_id} does not exist in this collection")
            if metadata is not None:
                row.user_metadata = metadata_object(metadata)
                row.metadata_seq = seq
            if thumbnail_path is not None:
                row.thumbnail_path = thumbnail_path
            if status is not None:
                row.status = ImageStatus(status).value
            row.updated_at = utcnow()
            session.flush()
            return image_record(row)

    def update_sources(self, collection_id: int, updates: Sequence[SourceUpdate]) -> int:
        """Records new paths (moves) or new size/mtime (touched files), in one transaction.

        Returns the number of rows changed (0 when the collection is gone).
        """
        if not updates:
            return 0
        changed = 0
        with self._write() as session:
            if self._lock_if_present(session, collection_id) is None:
                return 0
            now = utcnow()
            for change in updates:
                result = session.execute(
                    update(Image)
                    .where(Image.collection_id == collection_id, Image.id == change.image_id)
                    .values(
                        source_uri=change.source_uri,
                        original_name=change.original_name,
                        source_size=change.size,
                        source_mtime_ns=change.mtime_ns,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                changed += int(getattr(result, "rowcount", 0) or 0)
        return changed

    # -- reads ---------------------------------------------------------------------------------

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
            for chunk in chunks(ids):
                for row in session.scalars(
                    select(Image).where(Image.collection_id == collection_id, Image.id.in_(chunk))
                ):
                    found[row.id] = image_record(row)
        return found

    def find_by_sha256(self, collection_id: int, hashes: Iterable[str]) -> dict[str, int]:
        wanted = sorted({value.lower() for value in hashes})
        found: dict[str, int] = {}
        with self._read() as session:
            for chunk in chunks(wanted):
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
            return [image_record(row) for row in rows]

    def images_at_sources(
        self, collection_id: int, uris: Sequence[str]
    ) -> dict[str, list[SourceRow]]:
        """Images recorded at each of ``uris`` (usually one each), in id order."""
        found: dict[str, list[SourceRow]] = {}
        wanted = sorted(set(uris))
        with self._read() as session:
            for chunk in chunks(wanted, PATHS_PER_QUERY):
                rows = session.execute(
                    select(
                        Image.source_uri,
                        Image.id,
                        Image.sha256,
                        Image.source_size,
                        Image.source_mtime_ns,
                    )
                    .where(Image.collection_id == collection_id, Image.source_uri.in_(chunk))
                    .order_by(Image.id)
                )
                for uri, image_id, sha, size, mtime in rows:
                    found.setdefault(str(uri), []).append(SourceRow(image_id, sha, size, mtime))
        return found

    def iter_sha256(self, collection_id: int, *, page: int = 20_000) -> Iterator[str]:
        """Every sha256 in the collection, paged by id (short reads, bounded memory)."""
        last = 0
        while True:
            with self._read() as session:
                rows = session.execute(
                    select(Image.id, Image.sha256)
                    .where(Image.collection_id == collection_id, Image.id > last)
                    .order_by(Image.id)
                    .limit(page)
                ).all()
            if not rows:
                return
            last = int(rows[-1][0])
            for _, sha in rows:
                yield str(sha)

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
            return [image_record(row) for row in rows]

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
            for chunk in chunks(sorted({int(i) for i in among})):
                found.extend(session.scalars(base.where(Image.id.in_(chunk))))
            return found[:limit] if limit is not None else found
