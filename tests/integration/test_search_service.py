"""The query service on the real tiny CLIP and DINOv3: results, options, filters, fusion, threads.

Stored vectors are data (seeded unit vectors, as the catalog and index do not care where they came
from); every query the service encodes goes through the real models, and expected answers are
computed here independently (the encoders called on their own, numpy cosine, brute force).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ImageFactory
from tests.support.postgres import DATABASES, database_url_for
from tests.support.synthetic_photos import make_photo
from tests.support.tiny_models import make_tiny_clip
from vizdex.core.errors import CapabilityError, InvalidInputError, ModelNotFoundError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder, WrappedEncoder
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.search.errors import (
    CollectionNotFoundError,
    ImageNotFoundError,
    InvalidQueryError,
    ModelNotLoadedError,
)
from vizdex.search.float16 import from_float16, to_float16
from vizdex.search.fusion import reciprocal_rank_fusion
from vizdex.search.model_choice import ModelUse, choose_model
from vizdex.search.records import ImageFilter, NewImage
from vizdex.search.service import SearchOptions, SearchService
from vizdex.search.settings import QuerySettings, SearchSettings

# Names for the model-choice rule's table tests, which need no encoder at all.
CLIP, DINO = "some-clip", "some-dino"
CLIP_DIM, DINO_DIM = 24, 32  # the tiny checkpoints' widths (tests/support/tiny_models.py)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """Every test here runs on a SQLite catalog and on a PostgreSQL one."""
    return database_url_for(request, data_dir)


@pytest.fixture
def encoders(clip_encoder: Encoder, dino_encoder: Encoder) -> dict[str, Encoder]:
    return {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}


@pytest.fixture
def settings(search_settings: SearchSettings) -> SearchSettings:
    return replace(search_settings, index=replace(search_settings.index, device="cpu"))


def open_service(settings: SearchSettings, encoders: Mapping[str, Encoder]) -> SearchService:
    return SearchService.open(settings, encoders)


@pytest.fixture
def service(settings: SearchSettings, encoders: dict[str, Encoder]) -> Iterator[SearchService]:
    opened = open_service(settings, encoders)
    yield opened
    opened.close()


class Photos:
    """A collection of both real models' names; its stored vectors kept for expected answers."""

    def __init__(
        self,
        service: SearchService,
        new_image: ImageFactory,
        encoders: Mapping[str, Encoder],
        name: str = "photos",
    ):
        self.service, self.new_image, self.name = service, new_image, name
        self.encoders = dict(encoders)
        self.clip, self.dino = list(encoders)
        self.collection = service.create_collection(name, [self.clip, self.dino])
        self.vectors: dict[str, dict[int, np.ndarray]] = {self.clip: {}, self.dino: {}}
        self.count = 0

    def stored(self, model: str, key: int) -> np.ndarray:
        """A seeded unit vector of the model's width, the same for the same (model, key)."""
        salt = list(self.encoders).index(model)
        vector = np.random.default_rng([salt, key]).standard_normal(self.encoders[model].dim)
        return np.asarray(vector / np.linalg.norm(vector), np.float32)

    def add(self, count: int, metadata: list[dict[str, object]] | None = None) -> list[int]:
        items = []
        for i in range(count):
            key = self.count + i
            vectors = {name: self.stored(name, key) for name in self.encoders}
            meta = metadata[i] if metadata else {"n": key, "parity": "even" if key % 2 else "odd"}
            items.append(self.new_image(key, vectors, metadata=meta))
        self.count += count
        ids = [o.id for o in self.service.add_images(self.name, items)]
        for image_id, item in zip(ids, items, strict=True):
            for name in self.vectors:
                # What the catalog keeps (float16, unit length restored), which the index
                # searches: the expected ranking is over the same values, not float32's.
                kept = from_float16(to_float16(np.asarray(item.vectors[name]))[None])[0]
                self.vectors[name][image_id] = kept
        return ids

    def delete(self, ids: list[int]) -> None:
        self.service.delete_images(self.name, ids)
        for table in self.vectors.values():
            for image_id in ids:
                table.pop(image_id, None)

    def ranking(
        self, model: str, query: np.ndarray, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Brute force: every (id, cosine) best first."""
        table = self.vectors[model]
        ids = [i for i in sorted(table) if allowed is None or i in allowed]
        if not ids:
            return []
        matrix = np.stack([table[i] for i in ids])
        scores = matrix @ (query / np.linalg.norm(query))
        order = np.argsort(-scores, kind="stable")
        return [(ids[j], float(scores[j])) for j in order]


@pytest.fixture
def photos(service: SearchService, new_image: ImageFactory, encoders: dict[str, Encoder]) -> Photos:
    return Photos(service, new_image, encoders)


@contextmanager
def index_searches(
    service: SearchService, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[set[int] | None]]:
    """Records every index search the ranker makes: the id set it was restricted to, or None.

    A restricted search is the SQL prefilter's answer, so this shows what SQL returned even
    though the ranker re-checks every hit in Python (which would hide a broken SQL filter).
    """
    calls: list[set[int] | None] = []
    real = service.indexes.search

    def spy(*args: Any, **kwargs: Any) -> Any:
        allowed = kwargs.get("allowed_ids")
        calls.append(None if allowed is None else {int(i) for i in allowed})
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(service.indexes, "search", spy)
        yield calls


def assert_hits(result_hits: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [i for i, _ in result_hits] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in result_hits], [s for _, s in expected], atol=1e-5)


def pairs(result: object) -> list[tuple[int, float]]:
    return [(h.image_id, h.score) for h in result.hits]  # type: ignore[attr-defined]


def test_vector_search_is_exact_and_carries_each_images_metadata(
    service: SearchService, photos: Photos, rng: np.random.Generator
) -> None:
    photos.add(300)
    query = rng.standard_normal(DINO_DIM).astype(np.float32)
    result = service.search_vector("photos", query, model=photos.dino, options=SearchOptions(k=15))
    assert_hits(pairs(result), photos.ranking(photos.dino, query)[:15])
    assert result.model == photos.dino and not result.approximate and not result.fused
    for hit in result.hits:
        assert hit.model == photos.dino and hit.scores == {photos.dino: hit.score}
        assert hit.image.id == hit.image_id
        assert hit.image.metadata["n"] == hit.image_id - 1  # keys were added in id order


@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(k=0),
        SearchOptions(k=1001),
        SearchOptions(offset=-1),
        SearchOptions(k=1000, offset=9001),
        SearchOptions(min_score=1.5),
        SearchOptions(min_score=float("nan")),
    ],
)
def test_out_of_range_options_are_refused(
    service: SearchService, photos: Photos, options: SearchOptions
) -> None:
    with pytest.raises(InvalidQueryError):
        service.search_vector("photos", np.ones(CLIP_DIM), options=options)


def test_k_of_1000_is_allowed(service: SearchService, photos: Photos) -> None:
    photos.add(50)
    result = service.search_vector("photos", np.ones(CLIP_DIM), options=SearchOptions(k=1000))
    assert len(result.hits) == 50


@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(k=1000, offset=9000),  # the window's last page
        SearchOptions(k=1),
        SearchOptions(min_score=-1.0),  # cosine scores reach down to -1
        SearchOptions(min_score=-0.5),
        SearchOptions(min_score=1.0),
    ],
)
def test_options_at_their_limits_are_allowed(
    service: SearchService, photos: Photos, options: SearchOptions
) -> None:
    photos.add(5)
    result = service.search_vector("photos", np.ones(CLIP_DIM), options=options)
    expected = photos.ranking(photos.clip, np.ones(CLIP_DIM, np.float32))
    cut = options.min_score if options.min_score is not None else -1.0
    window = slice(options.offset, options.offset + options.k)
    assert_hits(pairs(result), [hit for hit in expected if hit[1] >= cut][window])


def test_pages_are_slices_of_one_ranking(
    service: SearchService, photos: Photos, rng: np.random.Generator
) -> None:
    photos.add(100)
    query = rng.standard_normal(CLIP_DIM)
    whole = pairs(service.search_vector("photos", query, options=SearchOptions(k=30)))
    pages = [
        pairs(service.search_vector("photos", query, options=SearchOptions(k=10, offset=o)))
        for o in (0, 10, 20)
    ]
    assert pages[0] + pages[1] + pages[2] == whole
    beyond = service.search_vector("photos", query, options=SearchOptions(k=10, offset=95))
    assert len(beyond.hits) == 5


def test_min_score_cuts_the_ranking(
    service: SearchService, photos: Photos, rng: np.random.Generator
) -> None:
    photos.add(200)
    query = rng.standard_normal(CLIP_DIM).astype(np.float32)
    expected = [p for p in photos.ranking(photos.clip, query) if p[1] >= 0.2][:50]
    result = service.search_vector("photos", query, options=SearchOptions(k=50, min_score=0.2))
    assert 0 < len(result.hits) < 50
    assert_hits(pairs(result), expected)


@pytest.mark.parametrize("prefilter_max", [20_000, 0])  # SQL-first, and over-fetch only
def test_filtered_search_is_exact_on_a_flat_index(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    new_image: ImageFactory,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    prefilter_max: int,
) -> None:
    settings = replace(settings, query=QuerySettings(prefilter_max=prefilter_max))
    service = open_service(settings, encoders)
    try:
        photos = Photos(service, new_image, encoders)
        kinds = ["cat", "dog", "bird"]
        metadata: list[dict[str, object]] = [
            {"kind": kinds[i % 3], "rare": i == 123, "stars": i % 5} for i in range(400)
        ]
        first = photos.add(200, metadata[:200])
        time.sleep(0.02)
        second = photos.add(200, metadata[200:])
        split = service.catalog.get_image(photos.collection.id, second[0]).created_at
        query = rng.standard_normal(CLIP_DIM).astype(np.float32)
        rare = ImageFilter(metadata={"rare": True})
        nothing = ImageFilter(metadata={"kind": "fish"})
        cases: list[tuple[ImageFilter, set[int]]] = [
            (
                ImageFilter(metadata={"kind": "cat"}),
                {i for i in first + second if (i - 1) % 3 == 0},
            ),
            (rare, {first[123]}),
            (
                ImageFilter(metadata={"kind": "dog", "stars": 4}),
                {i for i in first + second if (i - 1) % 3 == 1 and (i - 1) % 5 == 4},
            ),
            (ImageFilter(created_after=split), set(second)),
            (
                ImageFilter(created_before=split, metadata={"kind": "bird"}),
                {i for i in first if (i - 1) % 3 == 2},
            ),
            (nothing, set()),
        ]
        for filters, allowed in cases:
            options = SearchOptions(k=20, offset=5, filters=filters)
            with index_searches(service, monkeypatch) as searches:
                result = service.search_vector("photos", query, options=options)
            assert_hits(pairs(result), photos.ranking(photos.clip, query, allowed)[5:25])
            assert all(filters.matches(h.image) for h in result.hits)
            # Any search restricted to SQL's answer was restricted to exactly the matches.
            assert all(ids == allowed for ids in searches if ids is not None), filters
            if filters is rare and prefilter_max:
                # One match cannot fill the page: SQL names it and only it is searched.
                assert searches[-1] == {first[123]}
            if filters is nothing:
                # SQL says nothing matches after the first over-fetch: no second index search.
                assert searches == [None]
    finally:
        service.close()


@pytest.mark.parametrize("prefilter_max", [10, 9])
def test_sql_names_the_candidates_when_no_more_than_prefilter_max_match(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    new_image: ImageFactory,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    prefilter_max: int,
) -> None:
    """Ten images match, scattered among 600: the ranker's first over-fetch misses most of
    them. With room for ten ids, SQL names them and only they are searched; with room for
    nine, SQL's answer is too long to use and the ranker keeps fetching deeper. Exact both ways."""
    settings = replace(settings, query=QuerySettings(prefilter_max=prefilter_max))
    service = open_service(settings, encoders)
    try:
        photos = Photos(service, new_image, encoders)
        metadata: list[dict[str, object]] = [
            {"group": "a" if i % 60 == 0 else "b"} for i in range(600)
        ]
        ids = photos.add(600, metadata)
        members = {ids[i] for i in range(0, 600, 60)}
        query = rng.standard_normal(CLIP_DIM).astype(np.float32)
        options = SearchOptions(k=10, filters=ImageFilter(metadata={"group": "a"}))
        with index_searches(service, monkeypatch) as searches:
            result = service.search_vector("photos", query, options=options)
        assert_hits(pairs(result), photos.ranking(photos.clip, query, members))
        restricted = [allowed for allowed in searches if allowed is not None]
        assert restricted == ([members] if prefilter_max == 10 else [])
    finally:
        service.close()


def test_a_filter_keeping_half_fills_its_page_from_one_over_fetched_search(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    new_image: ImageFactory,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filtered search asks the index for 4x the page: a filter keeping half the images
    (SQL prefiltering off) fills a page of 40 without a second, deeper search."""
    settings = replace(settings, query=QuerySettings(prefilter_max=0))
    service = open_service(settings, encoders)
    try:
        photos = Photos(service, new_image, encoders)
        ids = photos.add(400)
        even = {image_id for image_id in ids if (image_id - 1) % 2 == 1}  # keys 1, 3, ...
        query = rng.standard_normal(CLIP_DIM).astype(np.float32)
        options = SearchOptions(k=40, filters=ImageFilter(metadata={"parity": "even"}))
        with index_searches(service, monkeypatch) as searches:
            result = service.search_vector("photos", query, options=options)
        assert_hits(pairs(result), photos.ranking(photos.clip, query, even)[:40])
        assert searches == [None]
    finally:
        service.close()


@pytest.fixture
def ivf(
    settings: SearchSettings, encoders: dict[str, Encoder], new_image: ImageFactory
) -> Iterator[tuple[SearchService, Photos]]:
    """600 photos in a collection whose indexes are IVF (exact only up to 100 vectors)."""
    ivf_settings = replace(settings, index=replace(settings.index, exact_max=100))
    service = open_service(ivf_settings, encoders)
    try:
        photos = Photos(service, new_image, encoders)
        photos.add(600)
        service.indexes.wait_idle(timeout=60)
        assert service.indexes.info(photos.collection, photos.clip).kind == "ivf"
        yield service, photos
    finally:
        service.close()


def test_filtered_search_on_an_ivf_index_finds_only_matches(
    ivf: tuple[SearchService, Photos],
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _photos = ivf
    query = rng.standard_normal(CLIP_DIM).astype(np.float32)
    rare = ImageFilter(metadata={"n": 77})
    with index_searches(service, monkeypatch) as searches:
        result = service.search_vector("photos", query, options=SearchOptions(filters=rare))
    assert [h.image_id for h in result.hits] == [78]
    # Found because SQL named image 78 and the index searched only it.
    assert [ids for ids in searches if ids is not None] == [{78}]
    odd = ImageFilter(metadata={"parity": "odd"})
    result = service.search_vector("photos", query, options=SearchOptions(k=10, filters=odd))
    assert result.approximate and len(result.hits) == 10
    assert all(h.image.metadata["parity"] == "odd" for h in result.hits)


def test_an_ivf_search_deeper_than_its_probed_lists_still_finds_k(
    ivf: tuple[SearchService, Photos], rng: np.random.Generator
) -> None:
    """The probed lists of an IVF index hold fewer than k vectors: the rest are probed too."""
    service, photos = ivf
    query = rng.standard_normal(CLIP_DIM).astype(np.float32)
    result = service.search_vector("photos", query, options=SearchOptions(k=500))
    assert_hits(pairs(result), photos.ranking(photos.clip, query)[:500])


def test_warming_up_builds_and_saves_every_collections_indexes(
    settings: SearchSettings, encoders: dict[str, Encoder], new_image: ImageFactory
) -> None:
    service = open_service(settings, encoders)
    try:
        photos = Photos(service, new_image, encoders)
        other = Photos(service, new_image, encoders, name="other")
        photos.add(4)
        other.add(3)
        service.warm_up()
        service.indexes.wait_idle(timeout=60)
        for collection in (photos.collection, other.collection):
            for model in (photos.clip, photos.dino):
                assert service.indexes.path_for(collection.id, model).is_file()
    finally:
        service.close()


def test_similar_images_exclude_the_image_itself(service: SearchService, photos: Photos) -> None:
    ids = photos.add(80)
    target = ids[10]
    clip, dino = photos.clip, photos.dino
    result = service.search_similar("photos", target, options=SearchOptions(k=5))
    assert result.model == dino  # a vision model is the default for image-to-image
    expected = [p for p in photos.ranking(dino, photos.vectors[dino][target]) if p[0] != target]
    assert_hits(pairs(result), expected[:5])
    result = service.search_similar("photos", target, model=clip, options=SearchOptions(k=5))
    expected = [p for p in photos.ranking(clip, photos.vectors[clip][target]) if p[0] != target]
    assert_hits(pairs(result), expected[:5])
    with pytest.raises(ImageNotFoundError):
        service.search_similar("photos", 9999)


def test_text_search_uses_the_multimodal_model(
    service: SearchService, photos: Photos, clip_encoder: Encoder
) -> None:
    photos.add(60)
    result = service.search_text("photos", "a red bicycle", options=SearchOptions(k=5))
    assert result.model == photos.clip
    query = clip_encoder.encode_texts(["a red bicycle"])[0]
    assert_hits(pairs(result), photos.ranking(photos.clip, query)[:5])
    with pytest.raises(CapabilityError):
        service.search_text("photos", "a red bicycle", model=photos.dino)
    with pytest.raises(InvalidQueryError):
        service.search_text("photos", "   ")
    service.create_collection("vision-only", [photos.dino])
    with pytest.raises(CapabilityError):
        service.search_text("vision-only", "a red bicycle")


def test_image_search_defaults_to_the_vision_model_and_can_fuse_both(
    service: SearchService, photos: Photos, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    photos.add(150)
    clip, dino = photos.clip, photos.dino
    image = make_photo(40, 30, seed=3)
    result = service.search_image("photos", image, options=SearchOptions(k=7))
    dino_query = dino_encoder.encode_images([image])[0]
    assert result.model == dino
    assert_hits(pairs(result), photos.ranking(dino, dino_query)[:7])
    clip_query = clip_encoder.encode_images([image])[0]
    result = service.search_image("photos", image, model=clip, options=SearchOptions(k=7))
    assert_hits(pairs(result), photos.ranking(clip, clip_query)[:7])

    fused = service.search_image("photos", image, fuse=True, options=SearchOptions(k=10, offset=2))
    rankings = {
        name: [i for i, _ in photos.ranking(name, query)[:100]]
        for name, query in ((clip, clip_query), (dino, dino_query))
    }
    expected = reciprocal_rank_fusion(rankings, k=60)[2:12]
    assert fused.fused and fused.model == f"{clip}+{dino}"
    assert_hits(pairs(fused), expected)
    assert all(set(h.scores) <= {clip, dino} and h.scores for h in fused.hits)


def test_similar_images_can_fuse_both_models(service: SearchService, photos: Photos) -> None:
    ids = photos.add(120)
    target = ids[0]
    fused = service.search_similar("photos", target, fuse=True, options=SearchOptions(k=10))
    rankings = {
        name: [i for i, _ in photos.ranking(name, photos.vectors[name][target]) if i != target][
            :100
        ]
        for name in (photos.clip, photos.dino)
    }
    assert [h.image_id for h in fused.hits] == [i for i, _ in reciprocal_rank_fusion(rankings)[:10]]


def test_fusion_needs_two_models_and_no_explicit_model(
    service: SearchService, photos: Photos
) -> None:
    ids = photos.add(5)
    service.create_collection("single", [photos.clip])
    with pytest.raises(InvalidQueryError, match="two models"):
        service.search_image("single", make_photo(8, 8), fuse=True)
    with pytest.raises(InvalidQueryError, match="omit"):
        service.search_similar("photos", ids[0], fuse=True, model=photos.clip)


def test_bad_queries_are_input_errors(service: SearchService, photos: Photos) -> None:
    photos.add(5)
    clip, dino = photos.clip, photos.dino
    with pytest.raises(InvalidQueryError, match="dimensions"):
        service.search_vector("photos", np.ones(7), model=clip)
    with pytest.raises(InvalidQueryError, match="dimensions"):
        service.search_vector("photos", np.ones(CLIP_DIM + 1), model=clip)
    with pytest.raises(InvalidQueryError, match="zeros"):
        service.search_vector("photos", np.zeros(CLIP_DIM), model=clip)
    with pytest.raises(InvalidQueryError):
        service.search_vector("photos", np.ones((2, CLIP_DIM)), model=clip)
    with pytest.raises(InvalidQueryError, match="not embedded"):
        service.search_vector("photos", np.ones(CLIP_DIM), model="other")
    with pytest.raises(CollectionNotFoundError):
        service.search_vector("nope", np.ones(CLIP_DIM))
    with pytest.raises(InvalidInputError):
        wrong = photos.new_image("x", {clip: np.ones(5), dino: np.ones(DINO_DIM)})
        service.add_images("photos", [wrong])


def test_read_your_writes_waits_for_a_written_seq_and_refuses_one_never_made(
    service: SearchService, photos: Photos
) -> None:
    photos.add(3)
    head = service.collection_seq("photos")
    assert [(record.name, seq) for record, seq in service.lag()] == [("photos", head)]
    for reached in (None, 0, head - 1, head):  # nothing asked, or written and applied already
        service.catch_up("photos", reached)
    with pytest.raises(InvalidQueryError, match="ahead"):
        service.catch_up("photos", head + 1)


def test_only_a_shared_catalog_is_followed_in_the_background(
    service: SearchService, database_url: str
) -> None:
    """On SQLite this process is the only writer: there is nothing to follow."""
    shared = database_url.startswith("postgresql")
    before = set(threading.enumerate())
    assert service.follow_other_writers(60.0) is shared
    started = [t for t in set(threading.enumerate()) - before if t.name == "vizdex-index-follower"]
    assert len(started) == int(shared)


def test_deleted_images_never_appear_before_or_after_a_restart(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    new_image: ImageFactory,
    rng: np.random.Generator,
) -> None:
    service = open_service(settings, encoders)
    photos = Photos(service, new_image, encoders)
    ids = photos.add(100)
    service.indexes.snapshot(photos.collection)  # the snapshot still has them...
    deleted = ids[::4]
    photos.delete(deleted)  # ...the deletes come after it
    queries = [rng.standard_normal(CLIP_DIM) for _ in range(10)]

    def returned(svc: SearchService) -> set[int]:
        found: set[int] = set()
        for query in queries:
            found |= {
                h.image_id
                for h in svc.search_vector("photos", query, options=SearchOptions(k=100)).hits
            }
        for target in ids[1::4][:5]:
            found |= {
                h.image_id
                for h in svc.search_similar("photos", target, options=SearchOptions(k=100)).hits
            }
        return found

    assert returned(service) & set(deleted) == set()
    assert len(returned(service)) == 75
    service.indexes.close(snapshot=False)  # crash: the deletes only live in the catalog
    service.catalog.close()
    restarted = open_service(settings, encoders)
    try:
        assert returned(restarted) & set(deleted) == set()
        with pytest.raises(ImageNotFoundError):
            restarted.search_similar("photos", deleted[0])
    finally:
        restarted.close()


def test_searches_run_while_another_thread_adds_and_deletes(
    service: SearchService, photos: Photos
) -> None:
    photos.add(200)
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]

    def searcher(seed: int) -> None:
        local = np.random.default_rng(seed)
        filters = ImageFilter(metadata={"parity": "odd"})
        while not stop.is_set():
            try:
                query = local.standard_normal(CLIP_DIM)
                plain = service.search_vector("photos", query, options=SearchOptions(k=20))
                assert len(plain.hits) == 20
                assert len({h.image_id for h in plain.hits}) == 20  # no duplicates
                odd = service.search_vector(
                    "photos", query, options=SearchOptions(k=5, filters=filters)
                )
                assert all(h.image.metadata["parity"] == "odd" for h in odd.hits)
                searches[0] += 2
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)
                return

    def writer() -> None:
        local = np.random.default_rng(99)
        try:
            for _ in range(25):
                photos.add(12)
                live = sorted(photos.vectors[photos.clip])
                photos.delete([int(i) for i in local.choice(live, size=5, replace=False)])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=searcher, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    write = threading.Thread(target=writer)
    write.start()
    write.join(timeout=120)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert searches[0] > 10
    # No lost writes: the catalog has exactly what the writer meant, and so do both indexes.
    expected = sorted(photos.vectors[photos.clip])
    assert len(expected) == 200 + 25 * (12 - 5)
    for model in (photos.clip, photos.dino):
        assert sorted(service.indexes.ids(photos.collection, model).tolist()) == expected
    assert service.catalog.count_images(photos.collection.id) == len(expected)


def test_collections_default_to_every_loaded_model_and_validate_their_settings(
    service: SearchService, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    clip = clip_encoder.name
    assert service.create_collection("default").models == (clip, dino_encoder.name)
    with pytest.raises(ModelNotFoundError):
        service.create_collection("unknown-model", ["nope"])
    with pytest.raises(InvalidInputError):
        service.create_collection("bad-factory", [clip], index_factory="HNSW32")
    assert service.create_collection("ivf", [clip], index_factory="IVF64,Flat").index_factory
    assert [c.name for c in service.list_collections()] == ["default", "ivf"]


def test_deleting_a_collection_removes_its_indexes(service: SearchService, photos: Photos) -> None:
    photos.add(10)
    service.indexes.snapshot(photos.collection)
    folder = service.indexes.path_for(photos.collection.id, photos.clip).parent
    assert folder.exists()
    service.delete_collection("photos")
    assert not folder.exists()
    with pytest.raises(CollectionNotFoundError):
        service.search_vector("photos", np.ones(CLIP_DIM))


def test_a_model_the_process_has_not_loaded_cannot_encode_queries(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    clip_encoder: Encoder,
    new_image: ImageFactory,
) -> None:
    service = open_service(settings, encoders)
    photos = Photos(service, new_image, encoders)
    photos.add(3)
    service.create_collection("empty", list(encoders))
    service.close()
    clip_only = open_service(settings, {clip_encoder.name: clip_encoder})
    try:
        with pytest.raises(ModelNotLoadedError):
            clip_only.search_image("photos", make_photo(8, 8), model=photos.dino)
        # Stored vectors need no encoder: "more like this" still works with either model.
        assert clip_only.search_similar("photos", 1, model=photos.dino).hits
        # Nor does a vector query, even before the model has a vector to give its width.
        nothing = clip_only.search_vector("empty", np.ones(DINO_DIM), model=photos.dino)
        assert nothing.hits == []
        # Which model answers a collection with no stored defaults is read from what is
        # loaded: a GET does not open an unloaded model's config (that may ask the hub).
        bare = clip_only.catalog.create_collection("bare", [clip_encoder.name, photos.dino])
        assert (bare.text_model, bare.image_model) == (None, None)
        looked_up = clip_only.answering_models(bare, discover=True)
        assert looked_up["image"] == photos.dino  # its config says vision: the rule picks it
        assert clip_only.answering_models(bare) == clip_only.answering_models(bare, discover=False)
        assert clip_only.answering_models(bare) != looked_up
    finally:
        clip_only.close()


def test_vectors_wider_than_256_are_checked_by_value(
    settings: SearchSettings, tmp_path: Path, new_image: ImageFactory
) -> None:
    """A 512-d model's vectors are accepted and a 511-d one refused (widths compared as
    numbers: Python shares int objects only up to 256)."""
    wide_dir = make_tiny_clip(tmp_path / "wide-clip", projection_dim=512)
    wide = load_encoder(str(wide_dir), EncoderSettings(models=(str(wide_dir),), device="cpu"))
    assert wide.dim == 512
    service = open_service(settings, {wide.name: wide})
    try:
        service.create_collection("wide", [wide.name])
        vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        service.add_images("wide", [new_image("ok", {wide.name: vector})])
        with pytest.raises(InvalidInputError, match="512 dimensions, got 511"):
            service.add_images("wide", [new_image("short", {wide.name: vector[:511]})])
        assert [h.image_id for h in service.search_vector("wide", vector).hits] == [1]
    finally:
        service.close()


# -- similarity utilities: expectations computed here, not with the module's own functions ----


def learned_temperature(clip_encoder: Encoder) -> float:
    """exp(logit_scale) read off the checkpoint's parameter, not through the encoder's property."""
    assert isinstance(clip_encoder, HFEncoder)
    model: Any = clip_encoder.model
    return float(torch.exp(model.logit_scale.detach()).item())


def expected_match(
    clip_encoder: Encoder, images: Sequence[Image.Image], texts: Sequence[str], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``[images, texts]`` cosine and per-image softmax, each input encoded on its own."""
    image_vectors = np.stack([clip_encoder.encode_images([i], normalize=False)[0] for i in images])
    text_vectors = np.stack([clip_encoder.encode_texts([t], normalize=False)[0] for t in texts])
    a = image_vectors / np.linalg.norm(image_vectors, axis=1, keepdims=True)
    b = text_vectors / np.linalg.norm(text_vectors, axis=1, keepdims=True)
    scores = (a @ b.T).astype(np.float64)
    logits = scale * scores
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return scores, exp / exp.sum(axis=1, keepdims=True)


def test_similarity_matrix_and_zero_shot_text_match(
    service: SearchService, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    images = [make_photo(16 + 8 * s, 16, seed=s) for s in range(3)]
    matrix = service.image_similarity(images)
    assert matrix.model == dino_encoder.name and matrix.scores.shape == (3, 3)
    # One batch, as the service encodes them: float32 kernels round differently per batch size
    # (1.5e-5 apart seen in CI), and the check is about pairing, not kernel rounding.
    vectors = dino_encoder.encode_images(images)
    np.testing.assert_allclose(matrix.scores, vectors @ vectors.T, atol=1e-5)
    np.testing.assert_allclose(np.diag(matrix.scores), 1.0, atol=1e-5)

    texts = ["a cat", "a dog", "a bird", "a car"]  # 3 images x 4 texts: orientation matters
    match = service.match_texts(images, texts)
    scale = learned_temperature(clip_encoder)
    assert match.model == clip_encoder.name and match.logit_scale == pytest.approx(scale)
    scores, probabilities = expected_match(clip_encoder, images, texts, scale)
    # Distinct rows and columns, so any transposition or permutation would be seen.
    assert len({tuple(np.round(r, 4)) for r in probabilities}) == 3
    assert np.ptp(probabilities, axis=1).min() > 1e-3
    assert match.scores.shape == match.probabilities.shape == (3, 4)
    np.testing.assert_allclose(match.scores, scores, atol=1e-5)
    np.testing.assert_allclose(match.probabilities, probabilities, atol=1e-5)
    with pytest.raises(InvalidQueryError):
        service.match_texts(images, [])
    with pytest.raises(InvalidQueryError):
        service.image_similarity([])
    with pytest.raises(CapabilityError):
        service.match_texts(images, texts, model=dino_encoder.name)
    with pytest.raises(ModelNotFoundError):
        service.image_similarity(images, model="nope")


def test_similarity_takes_up_to_its_limit_of_inputs(
    settings: SearchSettings, encoders: dict[str, Encoder]
) -> None:
    service = open_service(
        replace(settings, query=replace(settings.query, max_similarity_inputs=3)), encoders
    )
    try:
        images = [make_photo(16, 16, seed=s) for s in range(4)]
        assert service.image_similarity(images[:3]).scores.shape == (3, 3)
        assert service.match_texts(images[:3], ["a", "b", "c"]).scores.shape == (3, 3)
        with pytest.raises(InvalidQueryError, match="between 1 and 3 images"):
            service.image_similarity(images)
        with pytest.raises(InvalidQueryError, match="between 1 and 3 texts"):
            service.match_texts(images[:1], ["a", "b", "c", "d"])
        # Two sides (images, then others from ``rows`` on): each side has the cap to itself.
        service.image_similarity(images, rows=1)  # 1 and 3
        with pytest.raises(InvalidQueryError, match="1 and 3 other images are needed, got 4"):
            service.image_similarity([*images, make_photo(16, 16, seed=4)], rows=1)
        # Counted as the difference: 3 images then 7 others is 7 others, over the cap.
        ten = [make_photo(16, 16, seed=s) for s in range(10)]
        with pytest.raises(InvalidQueryError, match="1 and 3 other images are needed, got 7"):
            service.image_similarity(ten, rows=3)
    finally:
        service.close()


class WithoutTemperature(WrappedEncoder):
    """The real tiny CLIP behind an encoder that exposes no ``logit_scale``."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__(inner)
        self.name = "plain-clip"


def test_match_without_a_learned_temperature_uses_100(
    settings: SearchSettings, clip_encoder: Encoder
) -> None:
    plain = WithoutTemperature(clip_encoder)
    assert not hasattr(plain, "logit_scale") and plain.kind is ModelKind.MULTIMODAL
    service = open_service(settings, {plain.name: plain})
    try:
        images = [make_photo(24, 24, seed=5), make_photo(40, 24, seed=6)]
        texts = ["red", "snow", "x"]
        match = service.match_texts(images, texts)
        assert match.logit_scale == 100.0
        scores, probabilities = expected_match(clip_encoder, images, texts, 100.0)
        np.testing.assert_allclose(match.scores, scores, atol=1e-5)
        np.testing.assert_allclose(match.probabilities, probabilities, atol=1e-5)
    finally:
        service.close()


def test_real_tiny_encoders_end_to_end(
    settings: SearchSettings,
    encoders: dict[str, Encoder],
    clip_encoder: Encoder,
    dino_encoder: Encoder,
    new_image: ImageFactory,
) -> None:
    service = open_service(settings, encoders)
    try:
        service.create_collection("real", [clip_encoder.name, dino_encoder.name])
        images = [make_photo(96, 64, seed=seed) for seed in range(6)]
        vectors = {name: encoder.encode_images(images) for name, encoder in encoders.items()}
        items: list[NewImage] = [
            new_image(("real", i), {name: v[i] for name, v in vectors.items()})
            for i in range(len(images))
        ]
        ids = [o.id for o in service.add_images("real", items)]
        found = service.search_image("real", images[2], options=SearchOptions(k=3))
        assert found.model == dino_encoder.name
        assert found.hits[0].image_id == ids[2] and found.hits[0].score == pytest.approx(
            1, abs=1e-4
        )
        text = service.search_text("real", "a photo of a cat", options=SearchOptions(k=6))
        assert text.model == clip_encoder.name and len(text.hits) == 6
        fused = service.search_image("real", images[4], fuse=True, options=SearchOptions(k=2))
        assert fused.hits[0].image_id == ids[4]
        texts = ["a cat", "a dog", "a red bicycle"]
        match = service.match_texts(images[:2], texts)
        scale = learned_temperature(clip_encoder)
        scores, probabilities = expected_match(clip_encoder, images[:2], texts, scale)
        assert match.logit_scale == pytest.approx(scale)
        np.testing.assert_allclose(match.scores, scores, atol=1e-5)
        np.testing.assert_allclose(match.probabilities, probabilities, atol=1e-5)
    finally:
        service.close()


def test_created_filters_use_utc(service: SearchService, photos: Photos) -> None:
    ids = photos.add(3)
    created = service.catalog.get_image(photos.collection.id, ids[0]).created_at
    naive_local_equivalent = (created - timedelta(hours=1)).replace(tzinfo=None)
    window = ImageFilter(created_after=naive_local_equivalent)  # naive means UTC
    result = service.search_vector(
        "photos", np.ones(CLIP_DIM), options=SearchOptions(filters=window)
    )
    assert sorted(h.image_id for h in result.hits) == ids


@pytest.mark.parametrize(
    ("models", "use", "requested", "chosen"),
    [
        ([DINO, CLIP], ModelUse.TEXT, None, CLIP),  # text: the first multimodal model
        ([CLIP, DINO], ModelUse.IMAGE, None, DINO),  # images: a vision-only model first...
        ([CLIP, "other-clip"], ModelUse.IMAGE, None, CLIP),  # ...else the first
        (["unloaded", CLIP], ModelUse.IMAGE, None, "unloaded"),  # stored vectors need no model
        ([DINO, CLIP], ModelUse.ANY, None, DINO),  # no preference: the first
        ([CLIP, DINO], ModelUse.IMAGE, CLIP, CLIP),  # a named model is used as given
        ([CLIP, DINO], ModelUse.TEXT, CLIP, CLIP),
    ],
)
def test_one_rule_chooses_the_model_that_answers(
    models: list[str], use: ModelUse, requested: str | None, chosen: str
) -> None:
    kinds = {CLIP: ModelKind.MULTIMODAL, "other-clip": ModelKind.MULTIMODAL, DINO: ModelKind.VISION}
    assert choose_model(models, kinds.get, use, requested=requested) == chosen


def test_the_rule_refuses_text_without_a_multimodal_model() -> None:
    kinds = {DINO: ModelKind.VISION}
    with pytest.raises(CapabilityError, match=r"collection 'c' has no model that under.*unloaded"):
        choose_model([DINO, "unloaded"], kinds.get, ModelUse.TEXT, owner="collection 'c'")
    with pytest.raises(CapabilityError, match="vision-only"):
        choose_model([DINO], kinds.get, ModelUse.TEXT, requested=DINO)
    with pytest.raises(CapabilityError):
        choose_model([], kinds.get, ModelUse.IMAGE)
