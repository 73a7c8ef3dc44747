"""Changing a collection's models while it serves: add (with its back-fill), make a ready one
the default for text or image queries, remove one that is not a default; each model's coverage.

The catalog keeps the states (``Catalog.add_model`` and friends); this service checks what only a
process with models knows (is the model loaded, what can it embed), starts the back-fill on the
indexer, and keeps the indexes in step.
"""

from __future__ import annotations

from vizdex.core.errors import CapabilityError, InvalidInputError
from vizdex.core.kinds import ModelKind
from vizdex.indexer.backfill import BackfillProgress
from vizdex.indexer.pipeline import Indexer
from vizdex.indexer.ray_embed import connect
from vizdex.search import CollectionRecord, JobRecord, SearchService
from vizdex.search.index import validate_factory

_UNSET = object()


class ModelChanges:
    def __init__(self, search: SearchService, indexer: Indexer) -> None:
        self._search = search
        self._indexer = indexer

    def add_model(
        self,
        collection: str,
        model: str,
        *,
        background: bool = True,
        progress: BackfillProgress | None = None,
        ray_address: str | None = None,
    ) -> tuple[CollectionRecord, JobRecord]:
        """Adds ``model`` and starts its back-fill (a job, even when there is nothing to fill)."""
        encoder = self._search.loaded_encoder(model)  # ModelNotLoadedError (409) when it is not
        if ray_address is not None:
            connect(ray_address)  # before anything changes: Ray missing or unreachable
        record = self._search.get_collection(collection)
        if record.index_factory:
            validate_factory(record.index_factory, encoder.dim)
        # Vectors it would not mix with (a back-fill in another precision before): 409 now.
        self._search.catalog.check_precisions(record.id, {model: encoder.precision})
        record = self._search.catalog.add_model(record.id, model)
        self._search.indexes.sync(record)
        job = self._indexer.backfill(
            collection, model, background=background, progress=progress, ray_address=ray_address
        )
        return self._search.get_collection(collection), job

    def set_defaults(
        self,
        collection: str,
        *,
        text_model: str | object | None = _UNSET,
        image_model: str | object | None = _UNSET,
    ) -> CollectionRecord:
        """Switches the default models atomically (one transaction); each must be ready, and a
        text default must understand text."""
        record = self._search.get_collection(collection)
        if isinstance(text_model, str):
            kind = self._search.model_kind(text_model)
            if kind is ModelKind.VISION:
                raise CapabilityError(
                    f"model {text_model!r} is vision-only and cannot answer text queries",
                    model=text_model,
                )
        changes = {
            key: value
            for key, value in (("text_model", text_model), ("image_model", image_model))
            if value is not _UNSET
        }
        if not changes:
            raise InvalidInputError("give text_model and/or image_model to change")
        return self._search.catalog.set_default_models(record.id, **changes)

    def remove_model(self, collection: str, model: str) -> CollectionRecord:
        return self._search.remove_model(collection, model)
