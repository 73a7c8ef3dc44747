"""A collection's models while it serves: add one (back-filling), make a ready one a default,
remove one that is not; and how far each covers the collection's images.

A model added to a collection that has images starts ``backfilling``: it is in ``models`` at once
(new images get its vectors from then on; writers that read the collection before may still
leave it out), and a back-fill job gives the older images theirs. ``mark_ready`` turns it
``ready`` only once, under the collection's lock, no image lacks its vector; queries use ready
models only, so no one sees a half-filled index.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, exists, func, select

from vizdex.core.errors import InvalidInputError
from vizdex.search.catalog.positions import forget_positions
from vizdex.search.catalog.rows import collection_record, image_record
from vizdex.search.catalog.session import CatalogSession
from vizdex.search.errors import ModelInUseError, ModelNotReadyError
from vizdex.search.models import Embedding, EmbeddingTombstone, Image
from vizdex.search.records import CollectionRecord, ImageRecord, ModelState

_UNSET = object()


def _lacking(collection_id: int, model: str):  # type: ignore[no-untyped-def]
    """Images of the collection without a ``model`` vector (a correlated NOT EXISTS)."""
    has_vector = exists().where(and_(Embedding.image_id == Image.id, Embedding.model == model))
    return and_(Image.collection_id == collection_id, ~has_vector)


class ModelStatesPart(CatalogSession):
    def add_model(self, collection_id: int, model: str) -> CollectionRecord:
        """Adds ``model`` (``backfilling`` if the collection has images, else ``ready``).
        Adding a model the collection already has changes nothing (a back-fill resumes)."""
        if not model:
            raise InvalidInputError("a model name is needed")
        with self._write() as session:
            row = self._lock(session, collection_id)
            if model not in row.models:
                has_images = session.scalar(
                    select(Image.id).where(Image.collection_id == collection_id).limit(1)
                )
                row.models = [*row.models, model]
                if has_images is not None:
                    row.model_states = {**row.model_states, model: ModelState.BACKFILLING.value}
            return collection_record(row)

    def mark_ready(self, collection_id: int, model: str) -> bool:
        """``model`` becomes ready if every image has its vector now; returns whether it is."""
        with self._write() as session:
            row = self._lock(session, collection_id)
            if model not in row.models:
                return False
            if model not in row.model_states:
                return True
            missing = session.scalar(
                select(Image.id).where(_lacking(collection_id, model)).limit(1)
            )
            if missing is not None:
                return False
            row.model_states = {k: v for k, v in row.model_states.items() if k != model}
            return True

    def set_default_models(
        self,
        collection_id: int,
        *,
        text_model: str | object | None = _UNSET,
        image_model: str | object | None = _UNSET,
    ) -> CollectionRecord:
        """Sets the models text and image queries use when they name none, in one transaction;
        each must be a ready model of the collection (None: back to the model rule)."""
        with self._write() as session:
            row = self._lock(session, collection_id)
            for field, value in (("text_model", text_model), ("image_model", image_model)):
                if value is _UNSET:
                    continue
                if value is not None:
                    name = str(value)
                    if name not in row.models:
                        raise InvalidInputError(
                            f"collection {row.name!r} is not embedded with model {name!r}; its "
                            f"models are {list(row.models)}",
                            model=name,
                        )
                    if name in row.model_states:
                        raise ModelNotReadyError(
                            f"model {name!r} is still back-filling collection {row.name!r}; it "
                            "can become a default once it covers every image",
                            model=name,
                        )
                setattr(row, field, value)
            return collection_record(row)

    def remove_model(self, collection_id: int, model: str) -> CollectionRecord:
        """Removes ``model`` with its vectors and tombstones (its index goes as a whole)."""
        with self._write() as session:
            row = self._lock(session, collection_id)
            if model not in row.models:
                raise InvalidInputError(
                    f"collection {row.name!r} is not embedded with model {model!r}; its models "
                    f"are {list(row.models)}",
                    model=model,
                )
            if model in (row.text_model, row.image_model):
                raise ModelInUseError(
                    f"model {model!r} is a default of collection {row.name!r}; make another "
                    "model the default first (PATCH the collection)",
                    model=model,
                )
            if len(row.models) == 1:
                raise ModelInUseError(
                    f"model {model!r} is the only model of collection {row.name!r}", model=model
                )
            for table in (Embedding, EmbeddingTombstone):
                session.execute(
                    delete(table).where(table.collection_id == collection_id, table.model == model)
                )
            forget_positions(session, collection_id, model)
            row.models = [name for name in row.models if name != model]
            row.model_states = {k: v for k, v in row.model_states.items() if k != model}
            row.precisions = {k: v for k, v in row.precisions.items() if k != model}
            return collection_record(row)

    def model_coverage(self, collection_id: int) -> dict[str, int]:
        """Vectors per model of the collection (a model with none is missing)."""
        with self._read() as session:
            rows = session.execute(
                select(Embedding.model, func.count())
                .where(Embedding.collection_id == collection_id)
                .group_by(Embedding.model)
            ).all()
        return {str(model): int(count) for model, count in rows}

    def images_lacking(
        self, collection_id: int, model: str, *, after_id: int = 0, limit: int = 256
    ) -> list[ImageRecord]:
        """Images without a ``model`` vector, in id order after ``after_id`` (what a back-fill
        still has to do: the work list is the catalog itself, so a killed back-fill resumes)."""
        with self._read() as session:
            rows = session.scalars(
                select(Image)
                .where(_lacking(collection_id, model), Image.id > after_id)
                .order_by(Image.id)
                .limit(max(1, limit))
            ).all()
            return [image_record(row) for row in rows]

    def count_lacking(self, collection_id: int, model: str) -> int:
        with self._read() as session:
            count = session.scalar(
                select(func.count()).select_from(Image).where(_lacking(collection_id, model))
            )
        return int(count or 0)
