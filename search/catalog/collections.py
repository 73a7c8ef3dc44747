"""Collections: create, find, list and delete them; their sequence counter and image count."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from vizdex.core.errors import InvalidInputError
from vizdex.core.precision import Precision
from vizdex.search.catalog.precisions import settle_precisions
from vizdex.search.catalog.rows import collection_record
from vizdex.search.catalog.session import CatalogSession
from vizdex.search.errors import CollectionExistsError, CollectionNotFoundError
from vizdex.search.models import (
    Collection,
    Embedding,
    EmbeddingTombstone,
    Image,
    Job,
    VectorStorePosition,
    WorkItem,
)
from vizdex.search.records import CollectionRecord

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class CollectionsPart(CatalogSession):
    def create_collection(
        self,
        name: str,
        models: Sequence[str],
        *,
        index_factory: str | None = None,
        exact_max: int | None = None,
    ) -> CollectionRecord:
        if not COLLECTION_NAME.fullmatch(name):  # `$` alone lets a final "\n" through
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
        return collection_record(row)

    def get_collection(self, name: str) -> CollectionRecord:
        with self._read() as session:
            row = session.scalars(select(Collection).where(Collection.name == name)).one_or_none()
            if row is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            return collection_record(row)

    def get_collection_by_id(self, collection_id: int) -> CollectionRecord:
        with self._read() as session:
            row = session.get(Collection, collection_id)
            if row is None:
                raise CollectionNotFoundError(f"collection {collection_id} does not exist")
            return collection_record(row)

    def list_collections(self) -> list[CollectionRecord]:
        with self._read() as session:
            rows = session.scalars(select(Collection).order_by(Collection.name)).all()
            return [collection_record(row) for row in rows]

    def delete_collection(self, name: str) -> CollectionRecord:
        """Deletes the collection with its images, vectors, tombstones and jobs."""
        with self._write() as session:
            # Locked first, like every writer of the collection: deleting children before the
            # collection row could wait on a writer that in turn waits on this delete.
            row = session.scalars(
                select(Collection).where(Collection.name == name).with_for_update()
            ).one_or_none()
            if row is None:
                raise CollectionNotFoundError(f"collection {name!r} does not exist")
            record = collection_record(row)
            # Explicit child deletes: correct even where the backend does not enforce cascades.
            for table in (Embedding, EmbeddingTombstone, VectorStorePosition, WorkItem, Job, Image):
                session.execute(delete(table).where(table.collection_id == row.id))
            session.delete(row)
        return record

    def check_precisions(self, collection_id: int, precisions: Mapping[str, Precision]) -> None:
        """Refuse (``PrecisionMismatchError``) vectors of ``precisions`` that ``add_images`` would
        refuse, without writing: lets ingestion say no before it opens a job."""
        with self._read() as session:
            row = session.get(Collection, collection_id)
            if row is None:
                raise CollectionNotFoundError(f"collection {collection_id} does not exist")
            settle_precisions(session, row, precisions, record=False)

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
