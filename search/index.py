"""FAISS vector indexes: the only module that imports faiss.

Inner product on L2-normalised vectors (cosine similarity); FAISS ids are image ids. A
``VectorIndex`` owns a CPU index (the master copy: it is what gets mutated and saved) and, when
``IndexBackend`` found a GPU, a GPU replica that serves plain searches.

Large collections get a compressed index (IVF with PQ codes: 64 bytes per 512-d vector instead of
2 KiB). Its scores are approximate, so it fetches ``rerank`` times more candidates than asked and
re-scores them with the exact vectors of a memory-mapped float16 file (``vector_file``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np

from vizdex.core.errors import InvalidInputError, UnavailableError
from vizdex.search.errors import IndexCorruptError
from vizdex.search.index_file import replacing
from vizdex.search.rwlock import ReadWriteLock
from vizdex.search.similarity import normalize_rows
from vizdex.search.vector_file import VectorFile, VectorFilePlace
from vizdex.search.vector_source import ArraySource, VectorSource, sample_rows

log = logging.getLogger(__name__)

RECALL_AT = 10
TUNING_MARGIN = 0.01
# Tuning trusts a recall measured on its sample queries only this many standard errors below
# the mean: the smallest nprobe whose sampled recall crosses the target first is a lucky draw
# as often as not (one 512-query sample read 0.96 where 2,000 queries measure 0.952).
RECALL_SURE = 3.0
GPU_MAX_K = 2048  # FAISS GPU indexes answer at most this many neighbours per query
# A range search keeps scores within this of the threshold: a bit-identical copy of a vector
# scores 0.99999994 against it in float32, and must still count at threshold 1.
RANGE_SLACK = 1e-6
KIND_FLAT = "flat"
KIND_IVF = "ivf"
KIND_FACTORY = "factory"
KIND_COMPRESSED = "ivfpq"
# PQ trains 256 centroids per sub-vector: FAISS wants 39 points per centroid.
COMPRESSED_MIN_COUNT = 256 * 39
PQ_DIMS_PER_CODE = 8  # one byte of code per 8 dimensions: 64 bytes for 512-d vectors
# A compressed index's range search asks FAISS for hits down to ``spec.range_margin`` below the
# threshold (approximate scores err either way), then keeps those whose exact score reaches it.
# The margin is measured at build: this quantile of (exact - approximate) on sampled neighbours,
# plus a little.
RANGE_MARGIN_QUANTILE = 0.999
RANGE_MARGIN_EXTRA = 0.01
RANGE_MARGIN_SAMPLE = 256  # vectors whose neighbours measure the range margin
RERANK_CHUNK = 64  # queries re-scored at a time (bounds the gathered candidate vectors)
# A build also tries re-ranking this many times the policy's candidates: a deeper re-rank can
# reach the recall target with far fewer lists probed (10M: 128 probes at 10 per hit).
RERANK_DEPTHS = (1, 2, 4)
# What one re-scored candidate costs in PQ codes scanned: ~5 µs to gather, widen and score a
# float16 row vs ~62 ns to scan one 64-byte code (measured on this project's 2-core VM).
RERANK_SCAN_EQUIVALENT = 80


def gpu_available() -> bool:
    """The one capability check: a FAISS build with GPU support, and a GPU it can see."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class IndexBackend:
    """Where searches run. Decided once; the rest of the code does not care which."""

    def __init__(self, *, use_gpu: bool) -> None:
        self.use_gpu = use_gpu
        self._resources: Any = faiss.StandardGpuResources() if use_gpu else None

    @classmethod
    def detect(cls, device: str = "auto") -> IndexBackend:
        available = cls.check(device)
        return cls(use_gpu=available and device != "cpu")

    @staticmethod
    def check(device: str) -> bool:
        """Whether FAISS sees a GPU; raises if ``device`` asks for one it cannot have."""
        available = gpu_available()
        if device == "gpu" and not available:
            raise UnavailableError(
                "VIZDEX_INDEX_DEVICE=gpu, but FAISS has no GPU support or sees no GPU "
                "(install the faiss GPU build, or use auto/cpu)"
            )
        return available

    @property
    def name(self) -> str:
        return "gpu" if self.use_gpu else "cpu"

    def replica(self, cpu_index: Any) -> Any:
        """A GPU copy of ``cpu_index``, or None (CPU backend, or a type FAISS cannot move)."""
        if not self.use_gpu or cpu_index.ntotal == 0:
            return None
        try:
            return faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)
        except RuntimeError as error:
            log.warning("index stays on the CPU: %s", error)
            return None


@dataclass(frozen=True)
class IndexSpec:
    """What kind of index this is, and how it was trained (saved with the index)."""

    kind: str
    dim: int
    nlist: int = 0
    nprobe: int = 0
    factory: str | None = None
    trained_on: int = 0
    rerank: int = 0  # candidates fetched per hit and re-scored with exact vectors; 0: none
    # Per hit beyond the first RECALL_AT: the setting's own depth (``rerank`` may be a deeper
    # multiple, tuned for 10 hits); 0 (files from before): ``rerank``.
    rerank_beyond: int = 0
    range_margin: float = 0.0  # how far approximate scores fall below exact ones (measured)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(
            kind=str(data["kind"]),
            dim=int(data["dim"]),
            nlist=int(data.get("nlist", 0)),
            nprobe=int(data.get("nprobe", 0)),
            factory=data.get("factory"),
            trained_on=int(data.get("trained_on", 0)),
            rerank=int(data.get("rerank", 0)),
            rerank_beyond=int(data.get("rerank_beyond", 0)),
            range_margin=float(data.get("range_margin", 0.0)),
        )


@dataclass(frozen=True)
class IndexPolicy:
    """Exact up to ``exact_max`` vectors; above, IVF (or the collection's factory string); from
    ``compress_min`` on (None: never), IVF with PQ codes, re-ranked.

    ``rerank``: a lossy index (the compressed kind, or a factory string with PQ or SQ codes)
    fetches this many candidates per hit and re-scores them with exact vectors from a float16
    file at ``vector_place``; 0, or no place, turns re-ranking off.
    """

    exact_max: int
    factory: str | None = None
    recall_target: float = 0.95
    tuning_queries: int = 512
    seed: int = 0
    compress_min: int | None = None
    rerank: int = 10
    vector_place: VectorFilePlace | None = None

    def kind_for(self, count: int) -> str:
        if count <= self.exact_max:
            return KIND_FLAT
        if self.factory:
            # A factory's fixed nlist needs enough points to train: stay exact until there are.
            return KIND_FACTORY if count >= factory_min_count(self.factory) else KIND_FLAT
        if self.compress_min is not None and count >= max(self.compress_min, COMPRESSED_MIN_COUNT):
            return KIND_COMPRESSED
        return KIND_IVF

    def needs_retrain(self, spec: IndexSpec, count: int) -> bool:
        """Past the exact threshold, or twice the size the clustering was trained for."""
        wanted = self.kind_for(count)
        if wanted == KIND_FLAT:
            return False
        if spec.kind != wanted:
            return True
        return count > 2 * max(spec.trained_on, 1)


def ivf_nlist(count: int) -> int:
    """About 4·√N lists, but never fewer than 39 training points per list (FAISS's minimum)."""
    return max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def compressed_nlist(count: int) -> int:
    """IVF-Flat's 4·√N lists, at most ``COMPRESSED_MAX_NLIST``. Lists must keep growing with the
    collection: at 10M vectors and 2048 lists each list mixed ~500 unrelated clusters and recall
    0.95 took 516 probes (86 ms a query). Training and filling them stays affordable because the
    compressed kind trains its lists in two levels (``two_level_centroids``)."""
    return min(ivf_nlist(count), COMPRESSED_MAX_NLIST)


COMPRESSED_MAX_NLIST = 65536
MAX_FACTORY_NLIST = 1 << 20
MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per list


_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: '.*?' failed: )?", re.DOTALL)


def _faiss_reason(error: RuntimeError) -> str:
    """FAISS's message without its C++ signature and source path (users see this text)."""
    return _FAISS_LOCATION.sub("", str(error)).strip() or "FAISS refused it"


def validate_factory(factory: str, dim: int) -> None:
    """Accept only factory strings FAISS parses and whose index can delete ids (IVF-based)."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = _faiss_reason(error)
        raise InvalidInputError(f"index factory {factory!r} is not valid: {reason}") from None
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise InvalidInputError(
            f"index factory {factory!r} must describe an IVF index (e.g. 'IVF4096,Flat' or "
            "'OPQ32,IVF4096,PQ32'): other index types cannot delete vectors"
        )
    if int(ivf.nlist) > MAX_FACTORY_NLIST:
        raise InvalidInputError(
            f"index factory {factory!r} asks for {int(ivf.nlist):,} lists; at most "
            f"{MAX_FACTORY_NLIST:,} are supported"
        )


def factory_min_count(factory: str) -> int:
    """Vectors needed to train ``factory``'s IVF lists (read off the string: any dimension)."""
    match = re.search(r"IVF(\d+)", factory)
    return MIN_POINTS_PER_LIST * int(match.group(1)) if match else 0


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InvalidInputError(f"vectors must have shape [n, {dim}], got {list(matrix.shape)}")
    return matrix


def _as_ids(ids: np.ndarray | list[int]) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)


def _new_flat(dim: int) -> Any:
    return faiss.IndexIDMap(faiss.IndexFlatIP(dim))


def _new_trainable(kind: str, dim: int, count: int, factory: str | None) -> Any:
    metric = faiss.METRIC_INNER_PRODUCT
    if kind in (KIND_IVF, KIND_COMPRESSED):
        nlist = ivf_nlist(count) if kind == KIND_IVF else compressed_nlist(count)
        quantizer = faiss.IndexFlatIP(dim)
        index: Any
        if kind == KIND_IVF:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        elif dim % PQ_DIMS_PER_CODE == 0:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, dim // PQ_DIMS_PER_CODE, 8, metric)
        else:  # PQ needs the dimension split evenly: one byte per dimension instead
            qtype = faiss.ScalarQuantizer.QT_8bit
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, metric)
        index.cp.spherical = True  # centroids on the sphere, like the data
        return index
    assert factory is not None
    return faiss.index_factory(dim, factory, metric)


def two_level_centroids(sample: np.ndarray, nlist: int, *, seed: int) -> np.ndarray:
    """``nlist`` IVF centroids trained in two levels: √nlist coarse groups first, then each
    group split into lists in proportion to its share of the sample.

    Flat k-means costs sample·nlist dot products per iteration: 40 points per list make that
    40·nlist², 160 TFLOP over 25 iterations for the 12,649 lists of 10M vectors, hours on two
    cores; two levels cost about 40·nlist·2√nlist (70 times less at 10M). On the benchmark's
    clustered vectors the lists probe as well as flat k-means' (1M, 4000 lists: recall@10 0.868
    at nprobe 1 vs 0.82). Vectors are still added by their exact nearest centroid: a coarser
    assignment leaves larger residuals for the PQ codes and cost 0.04 of recall at every nprobe.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    coarse = _kmeans(sample, max(1, round(math.sqrt(nlist))), seed=seed)
    near = (sample @ coarse.T).argmax(axis=1)
    sizes = np.bincount(near, minlength=len(coarse))
    shares = _split_lists(sizes, nlist)
    order = np.argsort(near, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for group in np.flatnonzero(shares):
        members = sample[order[bounds[group] : bounds[group + 1]]]
        if shares[group] == 1:
            parts.append(normalize_rows(members.mean(axis=0, keepdims=True)))
        else:
            parts.append(_kmeans(members, int(shares[group]), seed=seed + 1 + int(group)))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _kmeans(points: np.ndarray, count: int, *, seed: int) -> np.ndarray:
    """``count`` spherical k-means centroids (FAISS's; a sparse group may have fewer than 39
    points per centroid, which is fine for lists that only need to be roughly balanced)."""
    kmeans = faiss.Kmeans(
        points.shape[1], count, niter=20, spherical=True, seed=seed, min_points_per_centroid=1
    )
    kmeans.train(np.ascontiguousarray(points, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _split_lists(sizes: np.ndarray, nlist: int) -> np.ndarray:
    """Lists per group, in proportion to its points: every non-empty group at least one and at
    most one per point, ``nlist`` in all (``nlist`` never exceeds the points)."""
    wanted = sizes * (nlist / max(1, int(sizes.sum())))
    shares: np.ndarray = np.minimum(np.maximum(np.floor(wanted), sizes > 0), sizes).astype(np.int64)
    while shares.sum() < nlist:  # the largest shortfall first
        gap = np.where(shares < sizes, wanted - shares, -np.inf)
        shares[int(gap.argmax())] += 1
    while shares.sum() > nlist:  # the largest excess first
        excess = np.where(shares > 1, shares - wanted, -np.inf)
        shares[int(excess.argmax())] -= 1
    return shares


def _lossy(index: Any, dim: int) -> bool:
    """Whether the index keeps less than the float32 vectors (PQ or SQ codes): worth re-ranking."""
    ivf = faiss.extract_index_ivf(index)
    return isinstance(index, faiss.IndexPreTransform) or int(ivf.code_size) < 4 * dim


def rescore(
    queries: np.ndarray,
    candidates: np.ndarray,
    approximate: np.ndarray,
    exact: VectorFile,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of each query's candidates by exact score (an id the file lacks keeps its
    approximate score; that only happens while a rebuilt file catches up)."""
    out_scores = np.full((len(queries), k), -np.inf, np.float32)
    out_ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(queries), RERANK_CHUNK):
        stop = min(len(queries), start + RERANK_CHUNK)
        ids = candidates[start:stop]
        vectors, found = exact.vectors(ids.reshape(-1))
        scores = np.einsum(
            "qcd,qd->qc", vectors.reshape(*ids.shape, -1), queries[start:stop], optimize=True
        ).astype(np.float32)
        scores = np.where(found.reshape(ids.shape), scores, approximate[start:stop])
        scores[ids < 0] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_scores[start:stop, : top.shape[1]] = np.take_along_axis(scores, top, axis=1)
        out_ids[start:stop, : top.shape[1]] = np.take_along_axis(ids, top, axis=1)
    out_ids[out_scores == -np.inf] = -1
    return out_scores, out_ids


def _candidates(spec: IndexSpec, k: int) -> int:
    """Candidates a re-ranked search fetches for ``k`` hits: ``spec.rerank`` per hit for the
    first ``RECALL_AT`` (the depth was tuned for them), the setting's depth for the rest, so a
    deep page or a filtered search's over-fetch does not pay a 4x deeper re-rank per hit."""
    beyond = spec.rerank_beyond or spec.rerank
    return spec.rerank * min(k, RECALL_AT) + beyond * max(0, k - RECALL_AT)


def _search_parameters(index: Any, *, nprobe: int | None, selector: Any) -> Any:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        if selector is None:
            return None
        params = faiss.SearchParameters()
        params.sel = selector
        return params
    params = faiss.SearchParametersIVF()
    params.nprobe = int(nprobe or ivf.nprobe)
    if selector is not None:
        params.sel = selector
    if isinstance(index, faiss.IndexPreTransform):
        wrapper = faiss.SearchParametersPreTransform()
        wrapper.index_params = params
        return wrapper
    return params


def ivf_stage_ms() -> tuple[float, float]:
    """FAISS's own clocks of this process's IVF searches since the last call, in ms: (coarse
    quantizer, list scans), then reset. For benchmarks: they are process-wide, not per index."""
    stats = faiss.cvar.indexIVF_stats  # type: ignore[attr-defined]
    spent = (float(stats.quantization_time), float(stats.search_time))
    stats.reset()
    return spent


def _recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall, its lower confidence bound): the mean over queries less ``RECALL_SURE`` standard
    errors, so that a tuning sample's luck does not pass for recall the index lacks."""
    per_query = np.array(
        [
            len(np.intersect1d(a[a >= 0], b)) / max(1, len(b))
            for a, b in zip(found, truth, strict=True)
        ]
    )
    if not len(per_query):
        return 1.0, 1.0
    mean = float(per_query.mean())
    error = float(per_query.std(ddof=1)) / math.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
    return mean, mean - RECALL_SURE * error


def _sample(
    source: VectorSource, wanted: dict[str, np.ndarray], dim: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each named set of row positions read from one pass over ``source`` (positions past the
    rows it still has are left out)."""
    positions = np.unique(np.concatenate(list(wanted.values())))
    ids, vectors = sample_rows(source, positions, dim)
    out = {}
    for name, picked in wanted.items():
        rows = np.searchsorted(positions, picked)
        rows = rows[rows < len(ids)]
        out[name] = (ids[rows], np.ascontiguousarray(vectors[rows]))
    return out


def _drop_self(neighbours: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each query's neighbours without the query itself (it was taken from the data)."""
    rows = []
    for row, me in zip(neighbours, own, strict=True):
        rows.append(row[row != me][:k])
    return np.stack(rows)


class ExactNeighbours:
    """The exact top-``k`` of a few queries over vectors seen batch by batch (the truth that
    tuning measures recall against, without holding the collection)."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids) or not len(self.queries) or self.k < 1:
            return
        scores, positions = faiss.knn(
            self.queries, vectors, min(self.k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT
        )
        merged_scores = np.concatenate([self.scores, scores], axis=1)
        merged_ids = np.concatenate([self.ids, ids[positions]], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(merged_scores, top, axis=1)
        self.ids = np.take_along_axis(merged_ids, top, axis=1)


class Tuning(NamedTuple):
    nprobe: int
    recall: float  # measured on the tuning sample
    reached: bool  # whether its lower confidence bound reaches the target


def tune_nprobe(
    index: Any,
    sample: np.ndarray,
    sample_ids: np.ndarray,
    neighbours: np.ndarray,
    *,
    target: float,
    exact: VectorFile | None = None,
    rerank: int = 0,
    warn: bool = True,
) -> Tuning:
    """Smallest nprobe whose recall@10 against exact search surely reaches ``target`` (its
    lower confidence bound does, see ``_recall``), or every list if none does.

    Queries are vectors sampled from the collection itself (as "find similar" uses it), each
    scored without its own self-match, which would flatter the recall: ``neighbours`` are each
    one's exact top 11 in the whole collection, itself included. With ``exact`` the recall is
    that of the re-ranked answer, as searches will see it.
    """
    ivf = faiss.extract_index_ivf(index)
    count = int(index.ntotal)
    k = min(RECALL_AT, count - 1)
    if k < 1 or not len(sample):
        return Tuning(int(ivf.nlist), 1.0, reached=True)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    truth = _drop_self(neighbours[:, : k + 1], sample_ids, k)

    def recall(nprobe: int) -> tuple[float, float]:
        params = _search_parameters(index, nprobe=nprobe, selector=None)
        if exact is None or rerank < 1:
            _, found = index.search(sample, k + 1, params=params)
        else:
            fetch = min(count, (k + 1) * rerank)
            scores, candidates = index.search(sample, fetch, params=params)
            _, found = rescore(sample, candidates, scores, exact, k + 1)
        return _recall(_drop_self(found, sample_ids, k), truth)

    # Aim a little above the target: the estimate comes from a sample, and queries from outside
    # the collection (new photos, text) are a little harder than its own vectors.
    target = min(1.0, target + TUNING_MARGIN)
    low, high = 0, 1
    measured, sure = recall(high)
    while sure < target and high < ivf.nlist:
        low, high = high, min(high * 2, int(ivf.nlist))
        measured, sure = recall(high)
    while high - low > 1:  # the doubling overshoots: narrow down between the last two tries
        middle = (low + high) // 2
        value, value_sure = recall(middle)
        if value_sure >= target:
            high, measured, sure = middle, value, value_sure
        else:
            low = middle
    if sure < target and warn:
        log.warning("recall@%d reaches only %.3f even with nprobe=%d", k, measured, high)
    return Tuning(high, measured, reached=sure >= target)


def tune_search(
    index: Any,
    sample: np.ndarray,
    sample_ids: np.ndarray,
    neighbours: np.ndarray,
    *,
    target: float,
    exact: VectorFile | None,
    rerank: int,
) -> tuple[int, int, float]:
    """(nprobe, rerank, recall): for a re-ranked index, the cheapest pair that reaches
    ``target``, the re-rank depth among ``rerank`` times ``RERANK_DEPTHS``; the cost of a query
    is the codes it scans (nprobe times the mean list) plus its re-scored candidates in scan
    equivalents. Without re-ranking, ``tune_nprobe`` alone."""
    if exact is None or rerank < 1:
        nprobe, recall, _ = tune_nprobe(
            index, sample, sample_ids, neighbours, target=target, exact=exact, rerank=rerank
        )
        return nprobe, rerank, recall
    ivf = faiss.extract_index_ivf(index)
    mean_list = int(index.ntotal) / max(1, int(ivf.nlist))
    tried: list[tuple[float, int, Tuning]] = []  # (cost, rerank, tuning)
    for depth in RERANK_DEPTHS:
        tuning = tune_nprobe(
            index,
            sample,
            sample_ids,
            neighbours,
            target=target,
            exact=exact,
            rerank=rerank * depth,
            warn=False,
        )
        cost = tuning.nprobe * mean_list + RERANK_SCAN_EQUIVALENT * RECALL_AT * rerank * depth
        tried.append((cost, rerank * depth, tuning))
        if tuning.reached and tuning.nprobe == 1:  # deeper re-ranks could only cost more
            break
    reaching = [t for t in tried if t[2].reached]
    if reaching:
        _, depth_rerank, (nprobe, recall, _) = min(reaching)
    else:  # none reaches the target: the best recall, the shallowest re-rank on a tie
        _, depth_rerank, (nprobe, recall, _) = max(tried, key=lambda t: (t[2].recall, -t[1]))
        log.warning(
            "recall@%d reaches only %.3f even with nprobe=%d and %d candidates per hit",
            RECALL_AT,
            recall,
            nprobe,
            depth_rerank,
        )
    return nprobe, depth_rerank, recall


def measure_range_margin(index: Any, sample: np.ndarray, exact: VectorFile, nprobe: int) -> float:
    """How far below its exact score an approximate score may fall, on neighbours of sampled
    vectors: what a range search must reach below its threshold not to miss them."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    params = _search_parameters(index, nprobe=nprobe, selector=None)
    approximate, candidates = index.search(sample, min(int(index.ntotal), 100), params=params)
    found = candidates >= 0
    rows, _ = exact.vectors(candidates[found])
    owners = np.nonzero(found)[0]
    gaps = np.einsum("hd,hd->h", rows, sample[owners]) - approximate[found]
    if not len(gaps):
        return RANGE_MARGIN_EXTRA
    return float(max(0.0, np.quantile(gaps, RANGE_MARGIN_QUANTILE))) + RANGE_MARGIN_EXTRA


def _rescore_ranges(
    queries: np.ndarray,
    lims: np.ndarray,
    scores: np.ndarray,
    ids: np.ndarray,
    exact: VectorFile,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A range search's hits with exact scores, those below ``threshold`` dropped."""
    vectors, found = exact.vectors(ids)
    owner = np.repeat(np.arange(len(queries)), np.diff(lims))
    rescored = np.einsum("hd,hd->h", vectors, queries[owner]).astype(np.float32)
    rescored = np.where(found, rescored, scores)
    keep = rescored >= float(threshold) - RANGE_SLACK
    counts = np.bincount(owner[keep], minlength=len(queries))
    new_lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return new_lims, rescored[keep], ids[keep]


INDEX_FILE_SUFFIX = ".faiss"


class VectorIndex:
    """A thread-safe FAISS index plus the last catalog sequence number it contains."""

    def __init__(
        self,
        cpu_index: Any,
        spec: IndexSpec,
        backend: IndexBackend,
        *,
        last_seq: int,
        exact: VectorFile | None = None,
        mapped: bool = False,
    ) -> None:
        if spec.nprobe:  # before the GPU copy, which takes nprobe from the CPU index
            faiss.extract_index_ivf(cpu_index).nprobe = spec.nprobe
        self._cpu = cpu_index
        self._spec = spec
        # Exact vectors for re-ranking (spec.rerank > 0); None until loaded or rebuilt.
        self._exact = exact
        # Lists memory-mapped from a snapshot (read-only): copied to memory at the first change.
        self._mapped = mapped
        self._backend = backend
        self._gpu = backend.replica(cpu_index)
        # GPU indexes and their resources are not safe to search from several threads at once.
        self._gpu_lock = threading.Lock()
        self._last_seq = last_seq
        self._lock = ReadWriteLock()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def empty(cls, dim: int, backend: IndexBackend, *, last_seq: int = 0) -> VectorIndex:
        return cls(_new_flat(dim), IndexSpec(kind=KIND_FLAT, dim=dim), backend, last_seq=last_seq)

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        policy: IndexPolicy,
        backend: IndexBackend,
        *,
        last_seq: int,
        dim: int | None = None,
    ) -> VectorIndex:
        """A new index over these vectors, of the kind the policy picks for their number."""
        ids = _as_ids(ids)
        dim = dim if dim is not None else vectors.shape[1]
        vectors = _as_matrix(vectors, dim) if len(ids) else np.zeros((0, dim), np.float32)
        source = ArraySource(ids, vectors)
        return cls.build_from(source, policy, backend, last_seq=last_seq, dim=dim)

    @classmethod
    def build_from(
        cls,
        source: VectorSource,
        policy: IndexPolicy,
        backend: IndexBackend,
        *,
        last_seq: int,
        dim: int,
    ) -> VectorIndex:
        """A new index over ``source``'s vectors, read in its batches: memory is the index, a
        training sample (40 points per list, within FAISS's 39 to 256) and one batch.

        Two passes: a random sample (training points, tuning queries), then every vector into
        the index, the exact-vector file and the tuning queries' exact neighbours.
        """
        count = source.count
        kind = policy.kind_for(count)
        if kind == KIND_FLAT:
            index = _new_flat(dim)
            for batch_ids, batch_vectors in source.batches():
                index.add_with_ids(_as_matrix(batch_vectors, dim), _as_ids(batch_ids))
            return cls(index, IndexSpec(kind=kind, dim=dim), backend, last_seq=last_seq)
        index = _new_trainable(kind, dim, count, policy.factory)
        ivf = faiss.extract_index_ivf(index)
        rng = np.random.default_rng(policy.seed)
        # The coarse lists want 40 points per list; PQ codebooks 256 x 39 in all.
        floor = COMPRESSED_MIN_COUNT if kind == KIND_COMPRESSED else 0
        train_count = min(count, max(40 * int(ivf.nlist), floor))
        wanted = {
            "train": np.sort(rng.choice(count, size=train_count, replace=False)),
            "tune": rng.choice(count, size=min(count, policy.tuning_queries), replace=False),
            "margin": rng.choice(count, size=min(count, RANGE_MARGIN_SAMPLE), replace=False),
        }
        sample = _sample(source, wanted, dim)
        started = time.perf_counter()
        if kind == KIND_COMPRESSED and len(sample["train"][0]) >= ivf.nlist:
            # A full quantizer: train() then fits only the PQ codes.
            ivf.quantizer.add(two_level_centroids(sample["train"][1], ivf.nlist, seed=policy.seed))
        index.train(sample["train"][1])
        log.info(
            "trained %s (nlist %d) on %d sampled vectors in %.1f s",
            kind,
            ivf.nlist,
            len(sample["train"][0]),
            time.perf_counter() - started,
        )
        del sample["train"]
        rerank = policy.rerank if policy.vector_place is not None and _lossy(index, dim) else 0
        tune_ids, tune_vectors = sample["tune"]
        neighbours = ExactNeighbours(tune_vectors, min(RECALL_AT, count - 1) + 1)

        def fill() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for batch_ids, batch_vectors in source.batches():
                matrix, batch = _as_matrix(batch_vectors, dim), _as_ids(batch_ids)
                index.add_with_ids(matrix, batch)
                neighbours.add(batch, matrix)
                yield batch, matrix

        started = time.perf_counter()
        exact = None
        if rerank:
            assert policy.vector_place is not None
            exact = policy.vector_place.create(fill(), count=count, dim=dim, last_seq=last_seq)
        else:
            for _ in fill():
                pass
        log.info("added %d vectors in %.1f s", index.ntotal, time.perf_counter() - started)
        nprobe, rerank, recall = tune_search(
            index,
            tune_vectors,
            tune_ids,
            neighbours.ids,
            target=policy.recall_target,
            exact=exact,
            rerank=rerank,
        )
        log.info(
            "built %s index: %d vectors, nlist=%d, nprobe=%d, rerank=%d (recall@10 %.3f)",
            kind,
            index.ntotal,
            ivf.nlist,
            nprobe,
            rerank,
            recall,
        )
        spec = IndexSpec(
            kind=kind,
            dim=dim,
            nlist=int(ivf.nlist),
            nprobe=nprobe,
            factory=policy.factory if kind == KIND_FACTORY else None,
            trained_on=int(index.ntotal),
            rerank=rerank,
            rerank_beyond=min(rerank, policy.rerank),
            range_margin=(
                measure_range_margin(index, sample["margin"][1], exact, nprobe) if exact else 0.0
            ),
        )
        return cls(index, spec, backend, last_seq=last_seq, exact=exact)

    @classmethod
    def deserialize(
        cls, payload: np.ndarray, spec: IndexSpec, backend: IndexBackend, *, last_seq: int
    ) -> VectorIndex:
        index = faiss.deserialize_index(np.ascontiguousarray(payload, dtype=np.uint8))
        if index.d != spec.dim:
            raise IndexCorruptError(f"index dimension {index.d} does not match its header")
        return cls(index, spec, backend, last_seq=last_seq)

    @classmethod
    def open_mapped(
        cls, path: Path, spec: IndexSpec, backend: IndexBackend, *, last_seq: int
    ) -> VectorIndex:
        """An index file written by ``save_files``, memory-mapped: searches start at once and
        read only the lists they probe; the first change copies the lists to memory."""
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        except RuntimeError as error:
            raise IndexCorruptError(f"{path.name}: {_faiss_reason(error)}") from None
        if index.d != spec.dim:
            raise IndexCorruptError(f"index dimension {index.d} does not match its header")
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            # FAISS maps the lists as OnDiskInvertedLists, which start 32 threads per search to
            # touch the probed lists' pages first: ~6 ms a query whether or not the pages are
            # cached, more than the search itself. The kernel's readahead serves a list's
            # sequential pages as well.
            lists: Any = ivf.invlists and faiss.downcast_InvertedLists(ivf.invlists)
            if hasattr(lists, "prefetch_nthread"):
                lists.prefetch_nthread = 0
        return cls(index, spec, backend, last_seq=last_seq, mapped=ivf is not None)

    def serialize(self) -> tuple[np.ndarray, IndexSpec, int]:
        """(bytes, spec, last_seq), consistent with each other: taken under the read lock."""
        self._materialise()
        with self._lock.read():
            return faiss.serialize_index(self._cpu), self._spec, self._last_seq

    @property
    def saves_files(self) -> bool:
        """Saved as files of its own (``save_files``) rather than one snapshot payload: the
        re-ranked kind, whose index is memory-mapped at start-up and whose exact vectors are a
        file anyway."""
        return self._spec.rerank > 0

    def save_files(self, stem: Path) -> tuple[dict[str, Any], IndexSpec, int]:
        """Writes the FAISS index to a new file ``<stem>-<unique>.faiss`` (temp file, fsync,
        rename) and commits the exact vectors at the same sequence number.

        Returns (header fields naming both files, spec, last_seq). The snapshot that carries
        these fields is what makes them current; until it is renamed in place the old snapshot
        and its files stay valid.
        """
        self._materialise()  # FAISS writes mapped lists as a reference to their file, not the data
        with self._lock.read():
            if self._exact is None:
                raise IndexCorruptError("the index has no exact vectors to save")
            name = f"{stem.name}-{uuid.uuid4().hex[:12]}{INDEX_FILE_SUFFIX}"
            path = stem.with_name(name)
            digest = hashlib.sha256()
            with replacing(path) as handle:

                def write(data: bytes) -> int:
                    digest.update(data)
                    return handle.write(data)

                writer = faiss.PyCallbackIOWriter(write)  # type: ignore[attr-defined]
                faiss.write_index(self._cpu, writer)
            self._exact.commit(self._last_seq)
            fields = {
                "index_file": name,
                "index_size": path.stat().st_size,
                "index_sha256": digest.hexdigest(),
                "vector_file": self._exact.path.name,
            }
            return fields, self._spec, self._last_seq

    def _materialise(self) -> None:
        if self._mapped:
            with self._lock.write():
                self._materialise_locked()

    def _materialise_locked(self) -> None:
        """Copies memory-mapped (read-only) lists into memory so that they can change. Under the
        write lock: the mapped lists are unmapped here, under any search still reading them."""
        if not self._mapped:
            return
        ivf = faiss.extract_index_ivf(self._cpu)
        source = ivf.invlists
        assert source is not None
        lists: Any = faiss.ArrayInvertedLists(source.nlist, source.code_size)
        for number in range(source.nlist):
            size = source.list_size(number)
            if size:
                lists.add_entries(number, size, source.get_ids(number), source.get_codes(number))
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns it now
        self._mapped = False

    # -- exact vectors -------------------------------------------------------------------------

    @property
    def needs_exact(self) -> bool:
        """Re-ranked, but without its exact vectors (missing or damaged file): rebuild them."""
        return self._spec.rerank > 0 and self._exact is None

    @property
    def exact_damaged(self) -> bool:
        """A block of the exact vectors failed its checksum (found by a search): rebuild them."""
        exact = self._exact
        return exact is not None and exact.damaged

    @property
    def exact_file(self) -> Path | None:
        return self._exact.path if self._exact is not None else None

    def attach_exact(self, exact: VectorFile | None) -> None:
        with self._lock.write():
            old, self._exact = self._exact, exact
        if old is not None and old is not exact:
            old.close()

    def exact_ids(self) -> np.ndarray | None:
        """The ids the exact vectors cover (for consistency checks), or None without them."""
        with self._lock.read():
            return self._exact.live_ids() if self._exact is not None else None

    # -- state ---------------------------------------------------------------------------------

    @property
    def spec(self) -> IndexSpec:
        return self._spec

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def device(self) -> str:
        return "gpu" if self._gpu is not None else "cpu"

    @property
    def approximate(self) -> bool:
        return self._spec.kind != KIND_FLAT

    @property
    def mapped(self) -> bool:
        return self._mapped

    def ids(self) -> np.ndarray:
        """Every id in the index (for consistency checks; O(N))."""
        with self._lock.read():
            ivf = faiss.try_extract_index_ivf(self._cpu)
            if ivf is None:
                return faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
            lists = ivf.invlists
            assert lists is not None
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(ivf.nlist)
                if lists.list_size(i)
            ]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # -- mutation ------------------------------------------------------------------------------

    def apply(
        self,
        *,
        removed_ids: np.ndarray,
        added_ids: np.ndarray,
        added_vectors: np.ndarray,
        upto_seq: int,
    ) -> None:
        """Removals first, then additions, then the new sequence number: one atomic step."""
        removed = _as_ids(removed_ids)
        added = _as_ids(added_ids)
        vectors = _as_matrix(added_vectors, self.dim) if len(added) else None
        with self._lock.write():
            if self._exact is not None and len(added):
                self._exact.reserve(len(added))  # a full disk fails here, before any change
            if len(removed) or vectors is not None:
                self._materialise_locked()
            if len(removed):
                self._cpu.remove_ids(faiss.IDSelectorBatch(removed))
            if vectors is not None:
                self._cpu.add_with_ids(vectors, added)
            if self._exact is not None:
                empty = np.zeros((0, self.dim), np.float32)
                self._exact.apply(removed, added, vectors if vectors is not None else empty)
            self._refresh_replica(removed=len(removed) > 0, added=added, vectors=vectors)
            self._last_seq = max(self._last_seq, upto_seq)

    def add(self, ids: np.ndarray, vectors: np.ndarray, *, upto_seq: int | None = None) -> None:
        empty = np.zeros(0, dtype=np.int64)
        self.apply(
            removed_ids=empty,
            added_ids=ids,
            added_vectors=vectors,
            upto_seq=self._last_seq if upto_seq is None else upto_seq,
        )

    def remove(self, ids: np.ndarray, *, upto_seq: int | None = None) -> None:
        self.apply(
            removed_ids=ids,
            added_ids=np.zeros(0, dtype=np.int64),
            added_vectors=np.zeros((0, self.dim), dtype=np.float32),
            upto_seq=self._last_seq if upto_seq is None else upto_seq,
        )

    def _refresh_replica(
        self, *, removed: bool, added: np.ndarray, vectors: np.ndarray | None
    ) -> None:
        if not self._backend.use_gpu:
            return
        if removed or self._gpu is None:
            # GPU indexes cannot delete ids: copy the master again (deletes come in batches).
            self._gpu = self._backend.replica(self._cpu)
        elif vectors is not None:
            self._gpu.add_with_ids(vectors, added)

    # -- search --------------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        exhaustive: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query; missing slots have id -1 and score -inf.

        ``allowed_ids`` restricts the search to those ids; ``exhaustive`` probes every IVF list
        (exact for IVF-Flat). Both run on the CPU master, as do k beyond the GPU's limit.
        """
        matrix = _as_matrix(queries, self.dim)
        with self._lock.read():
            total = int(self._cpu.ntotal)
            if total == 0 or k < 1:
                shape = (matrix.shape[0], max(k, 0))
                return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64)
            k_eff = min(k, total)
            exact = self._exact if self._spec.rerank else None
            fetch = min(total, _candidates(self._spec, k_eff)) if exact is not None else k_eff
            selector = None if allowed_ids is None else faiss.IDSelectorBatch(_as_ids(allowed_ids))
            ivf = faiss.try_extract_index_ivf(self._cpu)
            nprobe = int(ivf.nlist) if exhaustive and ivf is not None else None
            use_gpu = self._gpu is not None and selector is None and nprobe is None
            if use_gpu and fetch <= GPU_MAX_K:
                with self._gpu_lock:
                    scores, ids = self._gpu.search(matrix, fetch)
            else:
                params = _search_parameters(self._cpu, nprobe=nprobe, selector=selector)
                scores, ids = self._cpu.search(matrix, fetch, params=params)
            if exact is not None:
                scores, ids = rescore(matrix, np.asarray(ids), np.asarray(scores), exact, k_eff)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        if k_eff < k:
            pad = ((0, 0), (0, k - k_eff))
            scores = np.pad(scores, pad, constant_values=-np.inf)
            ids = np.pad(ids, pad, constant_values=-1)
        return scores, ids

    def range_search(
        self, queries: np.ndarray, threshold: float, *, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every indexed vector scoring at least ``threshold`` with each query.

        Returns FAISS's layout ``(lims, scores, ids)``: query ``i``'s hits are
        ``scores[lims[i]:lims[i + 1]]``, in no order. Runs on the CPU master (FAISS GPU indexes
        have no range search). ``nprobe``: IVF lists probed (default: the index's tuned value).
        """
        matrix = _as_matrix(queries, self.dim)
        with self._lock.read():
            if int(self._cpu.ntotal) == 0 or len(matrix) == 0:
                empty = np.zeros(0, dtype=np.int64)
                return np.zeros(len(matrix) + 1, np.int64), np.zeros(0, np.float32), empty
            params = _search_parameters(self._cpu, nprobe=nprobe, selector=None)
            exact = self._exact if self._spec.rerank else None
            margin = self._spec.range_margin if exact is not None else 0.0
            try:
                lims, scores, ids = self._cpu.range_search(
                    matrix, float(threshold) - RANGE_SLACK - margin, params=params
                )
            except RuntimeError as error:  # an index type without range search (HNSW, ...)
                raise InvalidInputError(
                    f"this index ({self._spec.factory or self._spec.kind}) cannot answer a "
                    f"range search: {_faiss_reason(error)}"
                ) from None
            lims = np.asarray(lims, dtype=np.int64)
            scores = np.asarray(scores, dtype=np.float32)
            ids = np.asarray(ids, dtype=np.int64)
            if exact is not None:
                lims, scores, ids = _rescore_ranges(matrix, lims, scores, ids, exact, threshold)
        return lims, scores, ids
