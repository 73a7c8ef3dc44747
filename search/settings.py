"""Typed settings for the catalog, the vector indexes and the query service (``VIZDEX_*``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vizdex.core.env import data_dir_from_env, env_str, read_settings, setting
from vizdex.core.errors import InvalidInputError

INDEX_DEVICES = ("auto", "cpu", "gpu")
# Milvus index types vizdex builds: CPU ones, and GPU ones for a Milvus with GPUs (never lite).
MILVUS_INDEX_TYPES = ("flat", "ivf_flat", "hnsw", "gpu_cagra", "gpu_ivf_pq")
MILVUS_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MAX_K = 1000  # the most hits one query may ask for (the HTTP schema says the same)
# Images (or texts) per side of a similarity matrix or zero-shot match (the schema says the same).
MAX_SIMILARITY_INPUTS = 256


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'catalog.db'}"


def replica_index_dir(data_dir: Path, replica: str) -> Path:
    """A replica's own index folder: replicas sharing a data directory never write one
    another's index files (each follows the catalog on its own, at its own pace)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", replica).strip("-.") or "replica"
    return data_dir / "indexes" / f"replica-{cleaned}"


@dataclass(frozen=True)
class CatalogSettings:
    """Where the catalog lives and how it is opened.

    ``database_url``: any SQLAlchemy URL (``VIZDEX_DATABASE_URL``); default a SQLite file in the
    data directory. ``auto_upgrade``: apply pending migrations on open instead of refusing
    (``VIZDEX_AUTO_UPGRADE``). ``busy_timeout_ms``: how long SQLite waits for another writer
    (``VIZDEX_DB_BUSY_TIMEOUT_MS``).
    """

    database_url: str
    auto_upgrade: bool = setting("AUTO_UPGRADE", False)
    busy_timeout_ms: int = setting("DB_BUSY_TIMEOUT_MS", 30_000, minimum=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CatalogSettings:
        url = env_str("DATABASE_URL", default_database_url(data_dir_from_env(env)), env)
        return read_settings(cls, env, database_url=url)


@dataclass(frozen=True)
class IndexSettings:
    """Vector index policy and persistence.

    ``exact_max``: collections up to this many vectors use an exact (flat) index; above it an IVF
    index or the collection's own ``index_factory`` (``VIZDEX_INDEX_EXACT_MAX``).
    ``recall_target``: IVF ``nprobe`` is the smallest that reaches this recall@10 against exact
    search on a sample of the collection's own vectors (``VIZDEX_INDEX_RECALL_TARGET``).
    ``snapshot_every``: write a new index file after this many applied changes
    (``VIZDEX_INDEX_SNAPSHOT_EVERY``). ``device``: ``auto`` uses a GPU when FAISS has GPU support
    and sees one (``VIZDEX_INDEX_DEVICE``). ``compress_min``: from this many vectors on, IVF with
    PQ codes (64 bytes per 512-d vector) re-ranked with exact float16 vectors from a
    memory-mapped file (``VIZDEX_INDEX_COMPRESS_MIN``; 0 turns compression off).
    ``rerank``: how many candidates per hit a compressed index re-scores at least
    (``VIZDEX_INDEX_RERANK``; the build may take 2× or 4×, see ``index.tune_search``).
    ``build_batch``: rows a build or retrain reads from the catalog at a time; with a training
    sample, all it holds besides the index
    (``VIZDEX_INDEX_BUILD_BATCH``).

    ``vector_store``: ``faiss`` (local indexes), ``milvus://host:19530`` or a milvus-lite
    ``.db`` file (``VIZDEX_VECTOR_STORE``). ``milvus_index``: the index type a new Milvus
    collection gets (``VIZDEX_MILVUS_INDEX``; ``vizdex reindex --index-type`` sets one per
    collection). ``milvus_batch``: sequence numbers the Milvus follower applies per batch
    (``VIZDEX_MILVUS_BATCH``). ``milvus_token``: ``user:password`` or an API key for a secured
    Milvus (``VIZDEX_MILVUS_TOKEN``). ``milvus_prefix``: the start of every Milvus collection
    name this catalog owns (``VIZDEX_MILVUS_PREFIX``): two catalogs sharing one Milvus need
    different prefixes, and the follower drops collections under its prefix that the catalog no
    longer has. ``milvus_lease_s``: on a SQLite catalog, how long the follower's lease lasts
    without renewal (``VIZDEX_MILVUS_LEASE_S``): another process takes over a killed follower
    after it, never a live one (PostgreSQL's advisory lock goes with its holder's session).
    """

    directory: Path
    exact_max: int = setting("INDEX_EXACT_MAX", 50_000)
    recall_target: float = setting("INDEX_RECALL_TARGET", 0.95)
    tuning_queries: int = 512
    snapshot_every: int = setting("INDEX_SNAPSHOT_EVERY", 10_000, minimum=1)
    device: str = setting("INDEX_DEVICE", "auto", choices=INDEX_DEVICES)
    compress_min: int = setting("INDEX_COMPRESS_MIN", 1_000_000, minimum=0)
    rerank: int = setting("INDEX_RERANK", 10, minimum=1)
    build_batch: int = setting("INDEX_BUILD_BATCH", 65_536, minimum=1)
    vector_store: str = setting("VECTOR_STORE", "faiss")
    milvus_index: str = setting("MILVUS_INDEX", "hnsw", choices=MILVUS_INDEX_TYPES)
    milvus_batch: int = setting("MILVUS_BATCH", 5000, minimum=1)
    milvus_token: str = setting("MILVUS_TOKEN", "")
    milvus_prefix: str = setting("MILVUS_PREFIX", "vizdex")
    milvus_lease_s: float = setting("MILVUS_LEASE_S", 30.0, minimum=1.0)
    sync_on_query: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in INDEX_DEVICES:
            raise InvalidInputError(f"index device must be one of {INDEX_DEVICES}")
        if not 0.0 < self.recall_target <= 1.0:
            raise InvalidInputError("index recall target must be in (0, 1]")
        if self.exact_max < 0:
            raise InvalidInputError("index exact_max must be >= 0")
        if self.compress_min < 0 or self.rerank < 1:
            raise InvalidInputError("index compress_min must be >= 0 and rerank >= 1")
        if not MILVUS_PREFIX.fullmatch(self.milvus_prefix):
            raise InvalidInputError(
                f"VIZDEX_MILVUS_PREFIX={self.milvus_prefix!r} must be a letter then up to 63 "
                "letters, digits or '_' (it starts Milvus collection names)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IndexSettings:
        """``VIZDEX_INDEX_DIR``, else ``indexes/replica-<VIZDEX_REPLICA_ID>`` in the data
        directory when a replica id is set, else ``indexes``."""
        data_dir = data_dir_from_env(env)
        replica = env_str("REPLICA_ID", "", env)
        default = replica_index_dir(data_dir, replica) if replica else data_dir / "indexes"
        directory = env_str("INDEX_DIR", str(default), env)
        return read_settings(cls, env, directory=Path(directory))


@dataclass(frozen=True)
class QuerySettings:
    """Bounds on a query, so that no request can ask for unbounded work.

    ``prefilter_max``: a metadata filter matching at most this many images is answered by
    searching only those ids; broader filters over-fetch from the index instead.
    ``catch_up_wait_s``: how long a search with ``min_seq`` waits for this replica's indexes to
    reach it before answering 503 ``not_caught_up`` (``VIZDEX_SEARCH_CATCH_UP_WAIT_S``).
    ``duplicate_pairs_max``: the most similar pairs a duplicate scan holds before it is refused
    with 422 ``too_many_pairs`` (``VIZDEX_DUPLICATES_MAX_PAIRS``; 16 bytes each).
    """

    max_k: int = MAX_K
    max_window: int = setting("SEARCH_MAX_WINDOW", 10_000, minimum=1000)
    rrf_k: int = 60
    rrf_depth: int = 100
    prefilter_max: int = setting("SEARCH_PREFILTER_MAX", 20_000, minimum=0)
    max_similarity_inputs: int = MAX_SIMILARITY_INPUTS
    catch_up_wait_s: float = setting("SEARCH_CATCH_UP_WAIT_S", 2.0, minimum=0.0)
    duplicate_pairs_max: int = setting("DUPLICATES_MAX_PAIRS", 5_000_000, minimum=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QuerySettings:
        return read_settings(cls, env)


@dataclass(frozen=True)
class SearchSettings:
    """Everything the ``search`` package needs, composed from the three parts above."""

    catalog: CatalogSettings
    index: IndexSettings
    query: QuerySettings = field(default_factory=QuerySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SearchSettings:
        return cls(
            catalog=CatalogSettings.from_env(env),
            index=IndexSettings.from_env(env),
            query=QuerySettings.from_env(env),
        )

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SearchSettings:
        """Defaults rooted at one directory (tests, the CLI's ``--data-dir``)."""
        return cls(
            catalog=CatalogSettings(default_database_url(data_dir)),
            index=IndexSettings(directory=data_dir / "indexes"),
        )
