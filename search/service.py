"""The query service: collections, writes that keep catalog and indexes in step, and searches.

Searches by text, by image, by an existing image's id and by raw vector. Filtered searches first
over-fetch from the index and filter in SQL; if a filter is so selective that this does not fill
the page, the matching ids come from SQL and only they are searched. Both are exact on a flat
index, because each ends with every candidate seen or with the page filled from a ranked list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vizdex.core.errors import CapabilityError, InvalidInputError, ModelNotFoundError
from vizdex.core.kinds import ModelKind
from vizdex.search.catalog import Catalog
from vizdex.search.errors import ImageNotFoundError, InvalidQueryError, ModelNotLoadedError
from vizdex.search.fusion import reciprocal_rank_fusion
from vizdex.search.index import validate_factory
from vizdex.search.index_store import IndexStore
from vizdex.search.records import AddedImage, CollectionRecord, ImageFilter, ImageRecord, NewImage
from vizdex.search.settings import QuerySettings, SearchSettings
from vizdex.search.similarity import DEFAULT_LOGIT_SCALE, cosine_matrix, text_probabilities

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from vizdex.encoders.base import Encoder


@dataclass(frozen=True)
class SearchOptions:
    """``k`` results after skipping ``offset``; ``min_score`` is a cosine cut-off per model."""

    k: int = 10
    offset: int = 0
    min_score: float | None = None
    filters: ImageFilter | None = None


@dataclass(frozen=True)
class SearchHit:
    image_id: int
    score: float  # cosine similarity, or the RRF score when fused
    model: str
    image: ImageRecord
    scores: Mapping[str, float] = field(default_factory=dict)  # cosine per model that found it


@dataclass(frozen=True)
class SearchResult:
    collection: str
    model: str  # "a+b" when several models were fused
    hits: list[SearchHit]
    k: int
    offset: int
    approximate: bool  # an IVF index answered: results may miss some true neighbours
    fused: bool = False


@dataclass(frozen=True)
class SimilarityMatrix:
    model: str
    scores: np.ndarray  # [n, n] cosine similarity


@dataclass(frozen=True)
class TextMatch:
    model: str
    scores: np.ndarray  # [images, texts] cosine similarity
    probabilities: np.ndarray  # [images, texts], each row sums to 1
    logit_scale: float


@dataclass
class _Ranked:
    """One model's ranked, filtered hits for one query."""

    hits: list[tuple[int, float]]
    images: dict[int, ImageRecord]
    approximate: bool


def _unit(vector: np.ndarray, *, what: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise InvalidQueryError(f"{what} must be a non-empty vector of finite numbers")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise InvalidQueryError(f"{what} must not be all zeros")
    return array / norm


class SearchService:
    """Owns the catalog and the indexes for a process; shared by the web app and the CLI."""

    def __init__(
        self,
        catalog: Catalog,
        indexes: IndexStore,
        encoders: Mapping[str, Encoder],
        settings: QuerySettings | None = None,
    ) -> None:
        self._catalog = catalog
        self._indexes = indexes
        self._encoders = dict(encoders)
        self._settings = settings or QuerySettings()

    @classmethod
    def open(cls, settings: SearchSettings, encoders: Mapping[str, Encoder]) -> SearchService:
        """Opens the catalog (refusing an out-of-date schema) and its index store."""
        catalog = Catalog.open(settings.catalog)
        return cls(catalog, IndexStore(catalog, settings.index), encoders, settings.query)

    def warm_up(self) -> None:
        """Loads or rebuilds every index now, so the first query does not pay for it."""
        for collection in self._catalog.list_collections():
            self._indexes.open_collection(collection)

    def close(self) -> None:
        self._indexes.close()
        self._catalog.close()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def indexes(self) -> IndexStore:
        return self._indexes

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
        lookup from the other (a collection's models cannot be changed later).
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
        return self._catalog.create_collection(
            name, models, index_factory=index_factory, exact_max=exact_max
        )

    def get_collection(self, name: str) -> CollectionRecord:
        return self._catalog.get_collection(name)

    def list_collections(self) -> list[CollectionRecord]:
        return self._catalog.list_collections()

    def delete_collection(self, name: str) -> CollectionRecord:
        record = self._catalog.delete_collection(name)
        self._indexes.drop_collection(record.id)
        return record

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
        self._indexes.sync(record)
        return outcomes

    def delete_images(self, collection: str, image_ids: Sequence[int]) -> list[int]:
        record = self._catalog.get_collection(collection)
        deleted = self._catalog.delete_images(record.id, image_ids)
        self._indexes.sync(record)
        return deleted

    def update_metadata(
        self, collection: str, image_id: int, metadata: Mapping[str, object]
    ) -> ImageRecord:
        record = self._catalog.get_collection(collection)
        return self._catalog.update_image(record.id, image_id, metadata=metadata)

    # -- model choice --------------------------------------------------------------------------

    def _encoder(self, model: str) -> Encoder:
        encoder = self._encoders.get(model)
        if encoder is None:
            raise ModelNotLoadedError(
                f"model {model!r} is not loaded in this vizdex; loaded: {sorted(self._encoders)}",
                model=model,
            )
        return encoder

    @staticmethod
    def _check_model(collection: CollectionRecord, model: str) -> None:
        if model not in collection.models:
            raise InvalidQueryError(
                f"collection {collection.name!r} is not embedded with model {model!r}; "
                f"its models are {list(collection.models)}"
            )

    def _text_model(self, collection: CollectionRecord, model: str | None) -> str:
        if model is not None:
            self._check_model(collection, model)
            if not self._encoder(model).supports_text:
                raise CapabilityError(
                    f"model {model!r} is vision-only and cannot search by text", model=model
                )
            return model
        for name in collection.models:
            encoder = self._encoders.get(name)
            if encoder is not None and encoder.supports_text:
                return name
        raise CapabilityError(
            f"collection {collection.name!r} has no loaded model that understands text "
            f"(its models: {list(collection.models)}); add a multimodal model such as CLIP"
        )

    def _image_model(self, collection: CollectionRecord, model: str | None) -> str:
        """Explicit model, else a vision model (DINOv3) when the collection has one, else CLIP."""
        if model is not None:
            self._check_model(collection, model)
            return model
        for name in collection.models:
            encoder = self._encoders.get(name)
            if encoder is not None and encoder.kind == ModelKind.VISION:
                return name
        return collection.models[0]

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
        name = self._text_model(record, model)
        vector = self._encoder(name).encode_texts([text])[0]
        return self._single(record, name, vector, options, exclude=frozenset())

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
            return self._fused(record, queries, options, exclude=frozenset())
        name = self._image_model(record, model)
        vector = self._encoder(name).encode_images([image])[0]
        return self._single(record, name, vector, options, exclude=frozenset())

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
        models = self._fusion_models(record, model) if fuse else [self._image_model(record, model)]
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
            return self._fused(record, queries, options, exclude=exclude)
        return self._single(record, models[0], queries[models[0]], options, exclude=exclude)

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
        name = model if model is not None else record.models[0]
        self._check_model(record, name)
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1:
            raise InvalidQueryError("the query vector must be one flat list of numbers")
        dim = self._indexes.dim(record, name)
        if dim is None and name in self._encoders:
            dim = self._encoders[name].dim
        if dim is not None and array.shape[0] != dim:
            raise InvalidQueryError(
                f"model {name!r} vectors have {dim} dimensions, the query has {array.shape[0]}"
            )
        return self._single(record, name, array, options, exclude=frozenset())

    def _fusion_models(self, collection: CollectionRecord, model: str | None) -> list[str]:
        if model is not None:
            raise InvalidQueryError("fuse combines all models of the collection: omit `model`")
        if len(collection.models) < 2:
            raise InvalidQueryError(
                f"fuse needs a collection with two models; {collection.name!r} has one"
            )
        return list(collection.models)

    def _single(
        self,
        collection: CollectionRecord,
        model: str,
        vector: np.ndarray,
        options: SearchOptions,
        *,
        exclude: frozenset[int],
    ) -> SearchResult:
        need = options.offset + options.k
        ranked = self._rank(collection, model, _unit(vector, what="query"), need, options, exclude)
        page = ranked.hits[options.offset : need]
        hits = [
            SearchHit(
                image_id=image_id,
                score=score,
                model=model,
                image=ranked.images[image_id],
                scores={model: score},
            )
            for image_id, score in page
        ]
        return SearchResult(
            collection=collection.name,
            model=model,
            hits=hits,
            k=options.k,
            offset=options.offset,
            approximate=ranked.approximate,
        )

    def _fused(
        self,
        collection: CollectionRecord,
        queries: Mapping[str, np.ndarray],
        options: SearchOptions,
        *,
        exclude: frozenset[int],
    ) -> SearchResult:
        need = options.offset + options.k
        depth = max(need, self._settings.rrf_depth)
        ranked = {
            name: self._rank(collection, name, _unit(vector, what="query"), depth, options, exclude)
            for name, vector in queries.items()
        }
        fused = reciprocal_rank_fusion(
            {name: [image_id for image_id, _ in r.hits] for name, r in ranked.items()},
            k=self._settings.rrf_k,
        )
        cosine = {name: dict(r.hits) for name, r in ranked.items()}
        images: dict[int, ImageRecord] = {}
        for r in ranked.values():
            images.update(r.images)
        label = "+".join(queries)
        hits = [
            SearchHit(
                image_id=image_id,
                score=score,
                model=label,
                image=images[image_id],
                scores={name: c[image_id] for name, c in cosine.items() if image_id in c},
            )
            for image_id, score in fused[options.offset : need]
        ]
        return SearchResult(
            collection=collection.name,
            model=label,
            hits=hits,
            k=options.k,
            offset=options.offset,
            approximate=any(r.approximate for r in ranked.values()),
            fused=True,
        )

    def _rank(
        self,
        collection: CollectionRecord,
        model: str,
        query: np.ndarray,
        need: int,
        options: SearchOptions,
        exclude: frozenset[int],
    ) -> _Ranked:
        """The best ``need`` hits of one model that pass the filters, exclusions and min_score."""
        filters = (
            options.filters if options.filters is not None and options.filters.active else None
        )
        images: dict[int, ImageRecord] = {}
        fetch = need + len(exclude) if filters is None else max(4 * need, 64) + len(exclude)
        exhaustive = False
        prefiltered = False
        allowed: np.ndarray | None = None
        matrix = query[None, :]
        while True:
            out = self._indexes.search(
                collection, model, matrix, fetch, allowed_ids=allowed, exhaustive=exhaustive
            )
            candidates = [
                (int(i), float(s))
                for i, s in zip(out.ids[0], out.scores[0], strict=True)
                if i >= 0 and int(i) not in exclude
            ]
            returned = int((out.ids[0] >= 0).sum())
            hits, below_cutoff = self._accept(collection, candidates, need, options, images)
            if len(hits) >= need or below_cutoff or prefiltered:
                break
            if returned >= out.count:  # every vector of the index has been looked at
                break
            if returned < fetch and out.approximate and not exhaustive:
                exhaustive = True  # IVF ran out of probed lists: probe them all
                continue
            if filters is not None and not prefiltered:
                # A selective filter: search only the ids SQL says match (exact on flat/IVF-Flat).
                limit = self._settings.prefilter_max
                matching = self._catalog.filter_image_ids(collection.id, filters, limit=limit + 1)
                if len(matching) <= limit:
                    prefiltered = True
                    allowed = np.asarray([i for i in matching if i not in exclude], np.int64)
                    if len(allowed) == 0:
                        hits = []
                        break
                    fetch, exhaustive = len(allowed), True
                    continue
            fetch = min(fetch * 4, out.count + len(exclude))
        return _Ranked(hits=hits, images=images, approximate=out.approximate)

    def _accept(
        self,
        collection: CollectionRecord,
        candidates: list[tuple[int, float]],
        need: int,
        options: SearchOptions,
        images: dict[int, ImageRecord],
    ) -> tuple[list[tuple[int, float]], bool]:
        """Walks ranked candidates, fetching their rows in chunks, until ``need`` pass.

        Returns (hits, whether the min_score cut-off was reached). Ids without a row (deleted in
        the catalog a moment ago) are dropped, so a deleted image is never returned.
        """
        filters = (
            options.filters if options.filters is not None and options.filters.active else None
        )
        hits: list[tuple[int, float]] = []
        chunk = max(2 * need, 100)
        for start in range(0, len(candidates), chunk):
            part = candidates[start : start + chunk]
            missing = [image_id for image_id, _ in part if image_id not in images]
            images.update(self._catalog.get_images(collection.id, missing))
            for image_id, score in part:
                if options.min_score is not None and score < options.min_score:
                    return hits, True
                image = images.get(image_id)
                if image is None or (filters is not None and not filters.matches(image)):
                    continue
                hits.append((image_id, score))
                if len(hits) >= need:
                    return hits, False
        return hits, False

    # -- similarity utilities ------------------------------------------------------------------

    def _pick(self, model: str | None, *, text: bool) -> str:
        if model is not None:
            if model not in self._encoders:
                raise ModelNotFoundError(
                    f"model {model!r} is not loaded; loaded: {sorted(self._encoders)}",
                    model=model,
                )
            return model
        for name, encoder in self._encoders.items():
            if encoder.supports_text if text else encoder.kind == ModelKind.VISION:
                return name
        if not text and self._encoders:
            return next(iter(self._encoders))
        raise CapabilityError("no loaded model can encode text; load a CLIP model")

    def _check_inputs(self, count: int, what: str) -> None:
        if not 1 <= count <= self._settings.max_similarity_inputs:
            raise InvalidQueryError(
                f"between 1 and {self._settings.max_similarity_inputs} {what} are needed, "
                f"got {count}"
            )

    def image_similarity(
        self, images: Sequence[PILImage], *, model: str | None = None
    ) -> SimilarityMatrix:
        """Cosine similarity of every pair of the given images (default: a vision model)."""
        self._check_inputs(len(images), "images")
        name = self._pick(model, text=False)
        vectors = self._encoders[name].encode_images(list(images))
        return SimilarityMatrix(model=name, scores=cosine_matrix(vectors))

    def match_texts(
        self, images: Sequence[PILImage], texts: Sequence[str], *, model: str | None = None
    ) -> TextMatch:
        """Image × text cosine scores, and per image a softmax over the texts.

        The softmax uses the model's own temperature when the encoder exposes ``logit_scale``
        (CLIP learns it, about 100), otherwise 100.
        """
        self._check_inputs(len(images), "images")
        self._check_inputs(len(texts), "texts")
        if any(not text or not text.strip() for text in texts):
            raise InvalidQueryError("texts must not be empty")
        name = self._pick(model, text=True)
        encoder = self._encoders[name]
        if not encoder.supports_text:
            raise CapabilityError(f"model {name!r} cannot encode text", model=name)
        scores = cosine_matrix(encoder.encode_images(list(images)), encoder.encode_texts(texts))
        scale = float(getattr(encoder, "logit_scale", DEFAULT_LOGIT_SCALE))
        return TextMatch(
            model=name,
            scores=scores,
            probabilities=text_probabilities(scores, scale),
            logit_scale=scale,
        )
