"""The query service: collections, writes that keep catalog and indexes in step, and searches.

Searches by text, by image, by an existing image's id and by raw vector; which model answers is
``model_choice``'s rule, how hits are ranked and filtered is ``ranking``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vizdex.core.errors import InvalidInputError, ModelNotFoundError, VizdexError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.discovery import discover_model
from vizdex.search.catalog import Catalog
from vizdex.search.duplicates import DuplicateFinder
from vizdex.search.errors import (
    ImageNotFoundError,
    InvalidQueryError,
    ModelInUseError,
    ModelNotLoadedError,
    NotCaughtUpError,
)
from vizdex.search.index import validate_factory
from vizdex.search.index_store import IndexStore
from vizdex.search.model_choice import (
    ModelUse,
    answering_models,
    choose_model,
    collection_model,
    default_models,
)
from vizdex.search.queries import (
    SearchHit,
    SearchOptions,
    SearchResult,
    SimilarityMatrix,
    TextMatch,
)
from vizdex.search.ranking import Ranker
from vizdex.search.records import AddedImage, CollectionRecord, ImageRecord, NewImage
from vizdex.search.settings import QuerySettings, SearchSettings
from vizdex.search.similarity import DEFAULT_LOGIT_SCALE, cosine_matrix, text_probabilities
from vizdex.search.vector_store import FaissVectorStore, VectorStore, open_vector_store

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from vizdex.encoders.base import Encoder


class ImageInputs(Protocol):
    """Images a query decodes lazily, for whichever encoder answers it (``web.inputs``)."""

    def __len__(self) -> int: ...

    def vectors(self, encoder: Encoder, *, normalize: bool = True) -> np.ndarray: ...


def _image_vectors(encoder: Encoder, images: Sequence[PILImage] | ImageInputs) -> np.ndarray:
    if isinstance(images, Sequence):
        return encoder.encode_images(list(images))
    return images.vectors(encoder)


__all__ = [
    "SearchHit",
    "SearchOptions",
    "SearchResult",
    "SearchService",
    "SimilarityMatrix",
    "TextMatch",
]


class SearchService:
    """Owns the catalog and the vector store for a process; shared by the web app and the CLI.

    Searches go through ``store`` (the local FAISS indexes by default, or Milvus). ``indexes``,
    the local FAISS index store, stays for what only it answers (near-duplicate range searches).
    """

    def __init__(
        self,
        catalog: Catalog,
        indexes: IndexStore,
        encoders: Mapping[str, Encoder],
        settings: QuerySettings | None = None,
        *,
        store: VectorStore | None = None,
    ) -> None:
        self._catalog = catalog
        self._indexes = indexes
        self._encoders = dict(encoders)
        self._settings = settings or QuerySettings()
        self._store = store or FaissVectorStore(catalog, indexes, self._settings)
        self._ranker = Ranker(self._store, self._settings)

    @classmethod
    def open(cls, settings: SearchSettings, encoders: Mapping[str, Encoder]) -> SearchService:
        """Opens the catalog (refusing an out-of-date schema), its index store and the vector
        store ``VIZDEX_VECTOR_STORE`` names."""
        catalog = Catalog.open(settings.catalog)
        indexes = IndexStore(catalog, settings.index)
        try:
            store = open_vector_store(catalog, indexes, settings.index, settings.query)
        except BaseException:
            indexes.close(snapshot=False)
            catalog.close()
            raise
        return cls(catalog, indexes, encoders, settings.query, store=store)

    def warm_up(self) -> None:
        """Loads or rebuilds every index now, so the first query does not pay for it."""
        for collection in self._catalog.list_collections():
            self._store.open_collection(collection)

    def use_encoders(self, encoders: Mapping[str, Encoder]) -> None:
        """Sets the models queries are encoded with: a server opens (and warms) its indexes
        while its models load, and hands them over once they are ready."""
        self._encoders = dict(encoders)

    def close(self) -> None:
        self._store.close()
        self._indexes.close()
        self._catalog.close()

    def follow_other_writers(self, interval_s: float) -> bool:
        """On a shared catalog (PostgreSQL: replicas and workers write too), keep the indexes
        caught up with the change feed every ``interval_s``, not only when a query comes; and
        always with Milvus (its follower applies this process's writes too).
        Returns whether it does (an embedded SQLite catalog has this process as its writer)."""
        shared = self._catalog.engine.dialect.name == "postgresql"
        if not shared and isinstance(self._store, FaissVectorStore):
            return False
        self._store.start_following(interval_s)
        return True

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def indexes(self) -> IndexStore:
        return self._indexes

    @property
    def store(self) -> VectorStore:
        return self._store

    @property
    def writer_indexes(self) -> IndexStore | None:
        """The index store an indexer in this process updates after its writes: the local FAISS
        indexes when they answer searches; None with Milvus (its follower applies the feed)."""
        return self._indexes if isinstance(self._store, FaissVectorStore) else None

    @property
    def duplicates(self) -> DuplicateFinder:
        """Near-duplicate groups; the model rule is an image query's (DINOv3 when there is one)."""
        return DuplicateFinder(
            self._catalog,
            self._store,
            lambda record, model: self._collection_model(record, model, ModelUse.IMAGE),
            max_pairs=self._settings.duplicate_pairs_max,
        )

    # -- collections ---------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        models: Sequence[str] | None = None,
        *,
        index_factory: str | None = None,
        exact_max: int | None = None,
    ) -> CollectionRecord:
        """``models`` default to every loaded model, as ``vizdex collections create`` does.

        An operator who configures CLIP and DINOv3 wants both: text search from the one, image
        lookup from the other. The defaults for text and image queries are stored with it.
        """
        if models is None:
            models = list(self._encoders)
        if not models:
            raise ModelNotFoundError("no models are loaded; set VIZDEX_MODELS")
        for model in models:
            if model not in self._encoders:
                raise ModelNotFoundError(
                    f"model {model!r} is not loaded; loaded models: {sorted(self._encoders)}",
                    model=model,
                )
            if index_factory:
                validate_factory(index_factory, self._encoders[model].dim)
        text_model, image_model = default_models(models, self._kind_of)
        return self._catalog.create_collection(
            name,
            models,
            index_factory=index_factory,
            exact_max=exact_max,
            text_model=text_model,
            image_model=image_model,
        )

    def get_collection(self, name: str) -> CollectionRecord:
        return self._catalog.get_collection(name)

    def list_collections(self) -> list[CollectionRecord]:
        return self._catalog.list_collections()

    def remove_model(self, collection: str, model: str) -> CollectionRecord:
        """Removes the model with its vectors (catalog), then what the store and the local FAISS
        indexes hold for it (a Milvus follower elsewhere drops it too: the catalog lacks it)."""
        record = self._catalog.get_collection(collection)
        for use, answering in self.answering_models(record, discover=True).items():
            # A stored default is the catalog's own refusal; this is the rule's pick.
            if answering == model and model not in (record.text_model, record.image_model):
                raise ModelInUseError(
                    f"model {model!r} answers the {use} queries of collection {record.name!r} "
                    f"(no {use} default is set, and the model rule picks it); make another "
                    f"model the {use} default first (PATCH the collection)",
                    model=model,
                )
        updated = self._catalog.remove_model(record.id, model)
        self._store.drop_model(record.id, model)
        self._indexes.drop_model(record.id, model)  # idempotent: the FAISS store did it already
        return updated

    def delete_collection(self, name: str) -> CollectionRecord:
        record = self._catalog.delete_collection(name)
        self._store.drop_collection(record.id)
        self._indexes.drop_collection(record.id)  # idempotent: the FAISS store did it already
        return record

    # -- read-your-writes ----------------------------------------------------------------------

    def collection_seq(self, collection: str) -> int:
        """The collection's last sequence number: what a write answers as ``seq``, read after
        its commit (so at least the write's own number; a metadata change takes one too)."""
        return self._catalog.collection_seq(self._catalog.get_collection(collection).id)

    def catch_up(self, collection: str, min_seq: int | None) -> None:
        """Waits, bounded, until this process's indexes of the collection hold ``min_seq``.

        Raises NotCaughtUpError (503 with Retry-After) when they do not in time.
        """
        if min_seq is None or min_seq <= 0:
            return
        record = self._catalog.get_collection(collection)
        head = self._catalog.collection_seq(record.id)
        if min_seq > head:  # every acknowledged write is committed: this one was never made
            raise InvalidQueryError(
                f"min_seq {min_seq} is ahead of collection {collection!r}'s last sequence "
                f"number {head}: pass the `seq` a write of this collection answered",
                min_seq=min_seq,
                head_seq=head,
            )
        wait_s = self._settings.catch_up_wait_s
        if not self._store.reach(record, min_seq, wait_s):
            raise NotCaughtUpError(
                f"this replica has not caught up with sequence number {min_seq} of collection "
                f"{collection!r} within {wait_s:g} s (the catalog is at {head}); retry",
                min_seq=min_seq,
                head_seq=head,
            )

    def lag(self) -> list[tuple[CollectionRecord, int | None]]:
        """Each collection with the sequence number this process's indexes have applied
        (None while none of its indexes is loaded)."""
        applied = self._store.applied_seqs()
        return [(record, applied.get(record.id)) for record in self._catalog.list_collections()]

    # -- writes --------------------------------------------------------------------------------

    def add_images(self, collection: str, items: Sequence[NewImage]) -> list[AddedImage]:
        """Commits the images, then updates the indexes before returning."""
        record = self._catalog.get_collection(collection)
        for item in items:
            for model, vector in item.vectors.items():
                encoder = self._encoders.get(model)
                if encoder is not None and np.asarray(vector).reshape(-1).size != encoder.dim:
                    raise InvalidInputError(
                        f"model {model!r} vectors have {encoder.dim} dimensions, got "
                        f"{np.asarray(vector).size}"
                    )
        outcomes = self._catalog.add_images(record.id, items)
        self._store.sync(record)
        return outcomes

    def delete_images(self, collection: str, image_ids: Sequence[int]) -> list[int]:
        record = self._catalog.get_collection(collection)
        deleted = self._catalog.delete_images(record.id, image_ids)
        self._store.sync(record)
        return deleted

    def update_metadata(
        self, collection: str, image_id: int, metadata: Mapping[str, object]
    ) -> ImageRecord:
        record = self._catalog.get_collection(collection)
        image = self._catalog.update_image(record.id, image_id, metadata=metadata)
        self._store.sync(record)  # the change took a sequence number: Milvus mirrors it
        return image

    # -- model choice --------------------------------------------------------------------------

    def _encoder(self, model: str) -> Encoder:
        encoder = self._encoders.get(model)
        if encoder is None:
            raise ModelNotLoadedError(
                f"model {model!r} is not loaded in this vizdex; loaded: {sorted(self._encoders)}",
                model=model,
            )
        return encoder

    def loaded_encoder(self, model: str) -> Encoder:
        """``model``'s encoder in this process; ModelNotLoadedError (409) when it has none."""
        return self._encoder(model)

    def answering_models(
        self, collection: CollectionRecord, *, discover: bool = False
    ) -> dict[str, str | None]:
        """Which model answers text and image queries of ``collection`` now (by its stored
        defaults, else the model rule). ``discover``: a model not loaded here has its kind read
        from its config (which may ask the hub: for a removal, not for every GET)."""
        return answering_models(collection, self._known_kind if discover else self._kind_of)

    def _known_kind(self, model: str) -> ModelKind | None:
        kind = self._kind_of(model)
        if kind is not None:
            return kind
        try:
            return discover_model(model).kind  # its config alone: no weights are loaded
        except VizdexError:
            return None

    def model_kind(self, model: str) -> ModelKind | None:
        """What ``model`` embeds, None when it is not loaded here."""
        return self._kind_of(model)

    def _kind_of(self, model: str) -> ModelKind | None:
        encoder = self._encoders.get(model)
        return encoder.kind if encoder is not None else None

    def _collection_model(
        self, collection: CollectionRecord, model: str | None, use: ModelUse
    ) -> str:
        """The collection's model that answers (``model_choice.collection_model``); a named one
        must be in it and ready (and loaded, for text)."""
        name = collection_model(collection, self._kind_of, use, requested=model)
        if use is ModelUse.TEXT:
            self._encoder(name)
        return name

    def _loaded_model(self, model: str | None, use: ModelUse) -> str:
        """The loaded model that answers a query on no collection."""
        if model is not None and model not in self._encoders:
            raise ModelNotFoundError(
                f"model {model!r} is not loaded; loaded: {sorted(self._encoders)}", model=model
            )
        return choose_model(list(self._encoders), self._kind_of, use, requested=model)

    # -- searches ------------------------------------------------------------------------------

    def _validate(self, options: SearchOptions) -> None:
        limits = self._settings
        if not 1 <= options.k <= limits.max_k:
            raise InvalidQueryError(f"k must be between 1 and {limits.max_k}, got {options.k}")
        if options.offset < 0:
            raise InvalidQueryError(f"offset must be >= 0, got {options.offset}")
        if options.offset + options.k > limits.max_window:
            raise InvalidQueryError(
                f"offset + k must be at most {limits.max_window}; narrow the query with filters "
                "or min_score instead of paging deeper"
            )
        if options.min_score is not None and not (
            math.isfinite(options.min_score) and -1.0 <= options.min_score <= 1.0
        ):
            raise InvalidQueryError("min_score must be a number between -1 and 1")

    def search_text(
        self,
        collection: str,
        text: str,
        *,
        model: str | None = None,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        options = options or SearchOptions()
        self._validate(options)
        if not text or not text.strip():
            raise InvalidQueryError("the text query is empty")
        record = self._catalog.get_collection(collection)
        name = self._collection_model(record, model, ModelUse.TEXT)
        vector = self._encoder(name).encode_texts([text])[0]
        return self._ranker.single(record, name, vector, options, exclude=frozenset())

    def search_image(
        self,
        collection: str,
        image: PILImage,
        *,
        model: str | None = None,
        fuse: bool = False,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        options = options or SearchOptions()
        self._validate(options)
        record = self._catalog.get_collection(collection)
        if fuse:
            models = self._fusion_models(record, model)
            queries = {name: self._encoder(name).encode_images([image])[0] for name in models}
            return self._ranker.fused(record, queries, options, exclude=frozenset())
        name = self._collection_model(record, model, ModelUse.IMAGE)
        vector = self._encoder(name).encode_images([image])[0]
        return self._ranker.single(record, name, vector, options, exclude=frozenset())

    def search_similar(
        self,
        collection: str,
        image_id: int,
        *,
        model: str | None = None,
        fuse: bool = False,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        """Images like a stored one (never itself), from its stored vector: no encoder needed."""
        options = options or SearchOptions()
        self._validate(options)
        record = self._catalog.get_collection(collection)
        self._catalog.get_image(record.id, image_id)  # ImageNotFoundError when it is not there
        models = (
            self._fusion_models(record, model)
            if fuse
            else [self._collection_model(record, model, ModelUse.IMAGE)]
        )
        queries: dict[str, np.ndarray] = {}
        for name in models:
            ids, vectors = self._catalog.get_vectors(record.id, name, [image_id])
            if len(ids) == 0:
                raise ImageNotFoundError(
                    f"image {image_id} has no {name!r} vector yet", image_id=image_id
                )
            queries[name] = vectors[0]
        exclude = frozenset({image_id})
        if fuse:
            return self._ranker.fused(record, queries, options, exclude=exclude)
        return self._ranker.single(record, models[0], queries[models[0]], options, exclude=exclude)

    def search_vector(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        *,
        model: str | None = None,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        options = options or SearchOptions()
        self._validate(options)
        record = self._catalog.get_collection(collection)
        name = self._collection_model(record, model, ModelUse.ANY)
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1:
            raise InvalidQueryError("the query vector must be one flat list of numbers")
        dim = self._store.dim(record, name)
        if dim is None and name in self._encoders:
            dim = self._encoders[name].dim
        if dim is not None and array.shape[0] != dim:
            raise InvalidQueryError(
                f"model {name!r} vectors have {dim} dimensions, the query has {array.shape[0]}"
            )
        return self._ranker.single(record, name, array, options, exclude=frozenset())

    def _fusion_models(self, collection: CollectionRecord, model: str | None) -> list[str]:
        if model is not None:
            raise InvalidQueryError("fuse combines all models of the collection: omit `model`")
        if len(collection.ready_models) < 2:
            raise InvalidQueryError(
                f"fuse needs a collection with two models ready; {collection.name!r} has "
                f"{list(collection.ready_models)}"
            )
        return list(collection.ready_models)

    # -- similarity utilities ------------------------------------------------------------------

    def _check_inputs(self, count: int, what: str) -> None:
        if not 1 <= count <= self._settings.max_similarity_inputs:
            raise InvalidQueryError(
                f"between 1 and {self._settings.max_similarity_inputs} {what} are needed, "
                f"got {count}"
            )

    def image_similarity(
        self,
        images: Sequence[PILImage] | ImageInputs,
        *,
        model: str | None = None,
        rows: int | None = None,
    ) -> SimilarityMatrix:
        """Cosine similarity of every pair of the given images (default: a vision model).

        ``rows``: the first ``rows`` images are one side, the rest the other (each side within
        the cap, as the HTTP schema's ``images`` and ``others`` are); None: one side.
        """
        first = len(images) if rows is None else rows
        self._check_inputs(first, "images")
        if rows is not None and len(images) - rows > self._settings.max_similarity_inputs:
            self._check_inputs(len(images) - rows, "other images")
        name = self._loaded_model(model, ModelUse.IMAGE)
        vectors = _image_vectors(self._encoders[name], images)
        return SimilarityMatrix(model=name, scores=cosine_matrix(vectors))

    def match_texts(
        self,
        images: Sequence[PILImage] | ImageInputs,
        texts: Sequence[str],
        *,
        model: str | None = None,
    ) -> TextMatch:
        """Image × text cosine scores, and per image a softmax over the texts.

        The softmax uses the model's own temperature when the encoder exposes ``logit_scale``
        (CLIP learns it, about 100), otherwise 100.
        """
        self._check_inputs(len(images), "images")
        self._check_inputs(len(texts), "texts")
        if any(not text or not text.strip() for text in texts):
            raise InvalidQueryError("texts must not be empty")
        name = self._loaded_model(model, ModelUse.TEXT)
        encoder = self._encoders[name]
        scores = cosine_matrix(_image_vectors(encoder, images), encoder.encode_texts(texts))
        scale = float(getattr(encoder, "logit_scale", DEFAULT_LOGIT_SCALE))
        return TextMatch(
            model=name,
            scores=scores,
            probabilities=text_probabilities(scores, scale),
            logit_scale=scale,
        )
