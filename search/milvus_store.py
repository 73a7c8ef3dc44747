"""Milvus as the vector store: the only module importing pymilvus (imported only when chosen).

One Milvus collection per vizdex collection and model: the image id as primary key, the vector,
the image's metadata mirrored into a JSON field and its created time in microseconds. Searches
push k, metadata equality and the created-time range down as a boolean expression, so a filtered
search returns k hits whenever k images match (no post-filtering of an ANN page).

The catalog stays the source of truth. A follower streams its change feed (vectors and tombstones
by sequence number, the feed the FAISS replay uses) into Milvus in batches: deletes, then upserts,
then the watermark is written to the catalog. Upserts and deletes are idempotent, so a follower
killed mid-batch replays that batch after a restart and Milvus ends up with exactly the catalog's
vectors. One follower at a time: on PostgreSQL the holder of an advisory lock; a milvus-lite file
can only be opened by one process anyway.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from sqlalchemy import Connection, text

from vizdex.search.catalog import Catalog
from vizdex.search.errors import (
    CollectionNotFoundError,
    FollowerFencedError,
    IndexTypeRefusedError,
    InvalidQueryError,
    PageTooDeepError,
    TooManyNeighboursError,
    VectorStoreUnavailableError,
)
from vizdex.search.index_store import IndexInfo, RangeOutput
from vizdex.search.queries import Ranked, SearchOptions
from vizdex.search.records import (
    ChangeSet,
    CollectionRecord,
    ImageFilter,
    ImageRecord,
    MetadataValue,
)
from vizdex.search.settings import MILVUS_INDEX_TYPES, IndexSettings

log = logging.getLogger(__name__)

FIELD_ID = "id"
FIELD_VECTOR = "vector"
FIELD_META = "meta"
FIELD_CREATED = "created_us"
MAX_TOPK = 16_384  # Milvus answers at most this many hits (limit + offset) per query
GPU_INDEX_TYPES = ("GPU_CAGRA", "GPU_IVF_PQ")
UPSERT_ROWS = 1000  # rows per upsert call: well under gRPC's 64 MB message limit at 4096 dims
FOREIGN_SAMPLE = 100  # ids read to tell whether a Milvus collection is another collection's
SYNC_WAIT_S = 5.0  # a write waits this long for the follow lock, then leaves it to the follower
SAME_VECTOR_ATOL = 1e-5  # float32 through gRPC: the same vector comes back exactly
RELOAD_TRIES = 3  # loads of a rebuilt collection before its index counts as not built
REBUILDING = -1  # the watermark `vizdex reindex` sets before it drops the Milvus collection
# A rebuild's index may take the better part of an hour (1M x 512 HNSW: ~43 min on 2 cores), so
# the wait ends only when Milvus stops making progress: no new indexed rows for this long.
INDEX_STALL_S = 600.0
PROBE_ROWS = 2048  # a probe build's rows: above the 1,024 from which Milvus indexes a segment
PROBE_WAIT_S = 60.0  # how long a probe build may take before its index type is refused
LEADER_RETRY_S = 1.0
# min_score as a range search: scores in (radius, range_filter]. The slack keeps a bit-identical
# vector (0.99999994 in float32) at threshold 1, as the FAISS range search does.
RANGE_SLACK = 1e-6
RANGE_CEILING = 1.01
RANGE_QUERIES = 256  # queries per Milvus range search (duplicate scans)
RANGE_FIRST_LIMIT = 64  # hits asked per query first; one that fills it is asked again deeper
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PREFIX = "vizdex"


@dataclass(frozen=True)
class Page:
    """Which hits a search asks Milvus for: ``limit`` of them after the first ``offset``."""

    offset: int
    limit: int


@dataclass(frozen=True)
class MilvusTarget:
    """Where the vectors go: ``uri`` for the client, and ``key``, the name the catalog records
    the follower's watermark under (the same target always gets the same key)."""

    uri: str
    key: str
    lite: bool

    @classmethod
    def parse(cls, spec: str) -> MilvusTarget:
        value = spec.strip()
        if value.startswith("milvus://"):
            uri = "http://" + value.removeprefix("milvus://")
            return cls(uri=uri, key=value, lite=False)
        if value.startswith(("http://", "https://")):
            return cls(uri=value, key=value, lite=False)
        path = str(Path(value).expanduser().resolve())
        return cls(uri=path, key=f"lite:{path}", lite=True)


def collection_name(collection_id: int, model: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A Milvus name for (collection, model): letters, digits and '_' only, whatever the model."""
    digest = hashlib.sha1(model.encode()).hexdigest()[:12]
    return f"{prefix}_{collection_id}_{digest}"


def micros(moment: datetime) -> int:
    """UTC microseconds since the epoch, exactly (no float rounding)."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


# A string literal escapes quotes, backslashes, line breaks and tabs; every other character goes
# in as it is: milvus-lite's parser knows no \u or \x escapes (JSON's \u00e9 for "é" fails
# there), and both it and Milvus 2.3's take any other character raw, NUL included.
_STRING_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _beyond_int64(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not (INT64_MIN <= value <= INT64_MAX)
    )


def json_field(value: Any) -> Any:
    """Metadata as Milvus's JSON field can hold it: JSON allows integers of any size, Milvus's
    field (and pymilvus) only 64-bit ones, and one such row must not stop the follower. Those
    become floats (strings past a float's range); everything else is kept as it is."""
    if isinstance(value, dict):
        return {key: json_field(child) for key, child in value.items()}
    if isinstance(value, list):
        return [json_field(child) for child in value]
    if _beyond_int64(value):
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return value


def _literal(value: MetadataValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.translate(_STRING_ESCAPES) + '"'
    if _beyond_int64(value):  # compared with the float its row was mirrored as
        value = json_field(value)
        if isinstance(value, str):
            return '"' + value + '"'
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQueryError("a metadata filter value must be a finite number")
    return repr(value)


def filter_expression(filters: ImageFilter | None, exclude: frozenset[int]) -> str:
    """The Milvus boolean expression for a query's filters and excluded ids ('' for none).

    Keys are safe inside double quotes: ``ImageFilter`` allows only letters, digits, '_', '-',
    '.' and spaces in them.
    """
    terms: list[str] = []
    if filters is not None:
        for key, value in sorted(filters.metadata.items()):
            terms.append(f'{FIELD_META}["{key}"] == {_literal(value)}')
        if filters.created_after is not None:
            terms.append(f"{FIELD_CREATED} >= {micros(filters.created_after)}")
        if filters.created_before is not None:
            terms.append(f"{FIELD_CREATED} < {micros(filters.created_before)}")
    if exclude:
        terms.append(f"{FIELD_ID} not in [{', '.join(str(i) for i in sorted(exclude))}]")
    return " and ".join(terms)


# Milvus builds one index per sealed segment: IVF lists are per segment, not per collection.
# A growing segment is sealed at maxSize x sealProportion (512 MB x 0.23 in 2.3, 1024 MB x 0.12
# from 2.4: ~120 MB either way); compaction later merges small ones up to maxSize.
SEGMENT_BYTES = 120 << 20
MIN_PER_LIST = 39  # FAISS's fewest training points per list


def segment_rows(dim: int) -> int:
    """Float32 vectors of ``dim`` in a freshly sealed segment (their other fields left out)."""
    return max(1, SEGMENT_BYTES // (4 * dim))


def _ivf_nlist(count: int, dim: int) -> int:
    """Milvus's 4·√n, with n the rows of a freshly sealed segment, the smallest that gets an
    index: 4·√(collection) lists would leave each segment's lists nearly empty (10M vectors
    asked 12,649 lists of every ~60k-row segment) and 64 probes would see a sliver of each.
    Merged segments (up to ~4-8x larger) then hold more per list, which costs probe time, not
    recall."""
    rows = min(max(count, 1), segment_rows(dim))
    return max(16, min(65_536, rows // MIN_PER_LIST, round(4 * math.sqrt(rows))))


def index_params(index_type: str, dim: int, count: int) -> dict[str, Any]:
    """Build parameters per index type (count: vectors expected, for IVF's list count)."""
    if index_type == "IVF_FLAT":
        return {"nlist": _ivf_nlist(count, dim)}
    if index_type == "HNSW":
        return {"M": 16, "efConstruction": 200}
    if index_type == "GPU_CAGRA":
        return {"intermediate_graph_degree": 64, "graph_degree": 32}
    if index_type == "GPU_IVF_PQ":
        m = max(d for d in range(1, min(dim, 64) + 1) if dim % d == 0)
        return {"nlist": _ivf_nlist(count, dim), "m": m, "nbits": 8}
    return {}


def search_params(index_type: str, limit: int) -> dict[str, Any]:
    """Query-time effort: HNSW's ef and CAGRA's itopk at least the page; IVF probes 1/8."""
    if index_type == "HNSW":
        return {"ef": max(limit, 128)}
    if index_type == "GPU_CAGRA":
        return {"itopk_size": max(limit, 128)}
    if index_type in ("IVF_FLAT", "GPU_IVF_PQ"):
        return {"nprobe": 64}
    return {}


def _wrap(action: str, error: Exception) -> VectorStoreUnavailableError:
    return VectorStoreUnavailableError(f"Milvus could not {action}: {error}")


class Leadership:
    """Which process follows the catalog into Milvus: on PostgreSQL the one holding a session
    advisory lock (keyed by the target); on SQLite the one holding a lease in the catalog,
    renewed while it follows and lapsing ``lease_s`` after it stops renewing (killed, or
    stalled), so a second process — a `vizdex reindex` while `vizdex serve` follows — neither
    takes over from a live follower nor waits for ever on a dead one.

    Each time a process becomes the follower it takes the next term from the catalog (its
    fencing token): its watermark writes carry the term and are refused once another process
    took a newer one, so a leader paused through a takeover (the lock lost with its session)
    cannot move the watermark back when it resumes.
    """

    def __init__(self, catalog: Catalog, key: str, lease_s: float = 30.0) -> None:
        self._catalog = catalog
        self._lease_s = lease_s
        self._renew_at = 0.0  # when a held lease is renewed next (SQLite)
        self._engine = catalog.engine
        self._key = key
        digest = hashlib.sha1(f"vizdex milvus follower {key}".encode()).digest()[:8]
        self._lock_key = int.from_bytes(digest, "big", signed=True)
        self._connection: Connection | None = None
        self._term: int | None = None
        self._mutex = threading.Lock()
        self._next_try = 0.0  # one that lost the race asks again after LEADER_RETRY_S

    @property
    def shared(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    @property
    def lease_s(self) -> float:
        """How long another process waits out a follower that stopped renewing (0 where an
        advisory lock goes with its holder's session)."""
        return 0.0 if self.shared else self._lease_s

    @property
    def term(self) -> int | None:
        """This process's term while it leads (None before it first led, or after it stood
        down)."""
        return self._term

    def held(self) -> bool:
        if not self.shared:
            return self._leased()
        with self._mutex:
            if self._connection is not None:
                if self._alive(self._connection):
                    return True
                self._connection = None  # its session, and so the lock, is gone
                self._term = None
            if time.monotonic() < self._next_try:  # searches ask often: not a query each time
                return False
            self._next_try = time.monotonic() + LEADER_RETRY_S
            return self._try()

    def _leased(self) -> bool:
        with self._mutex:
            now = time.monotonic()
            if self._term is not None and now < self._renew_at:
                return True
            if self._term is None and now < self._next_try:  # searches ask often
                return False
            term = self._catalog.claim_store_lease(self._key, self._term, self._lease_s)
            if term is None:
                self._term, self._next_try = None, now + LEADER_RETRY_S
                return False
            self._term, self._renew_at = term, now + self._lease_s / 3
            return True

    @staticmethod
    def _alive(connection: Connection) -> bool:
        """A session that still answers still holds its session-level lock; one that does not
        (the database restarted, the network dropped it) may have lost it to another process."""
        try:
            connection.execute(text("SELECT 1"))
            connection.commit()
            return True
        except Exception:
            log.warning("the Milvus follower lost its database session (and its lock)")
            connection.invalidate()
            connection.close()
            return False

    def _try(self) -> bool:
        connection = self._engine.connect()
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
            ).scalar()
            connection.commit()  # a session lock: it outlives the transaction
            if got:
                self._term = self._catalog.begin_store_term(self._key)
        except Exception:
            connection.invalidate()  # ends the session, and the lock with it
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        with self._mutex:
            connection, self._connection = self._connection, None
            term, self._term = self._term, None
            self._next_try = 0.0
        if term is not None and not self.shared:
            try:  # lets the lease lapse now, for the next process not to wait it out
                self._catalog.end_store_lease(self._key, term)
            except Exception:  # best effort: the lease lapses by itself
                log.debug("ending the follower lease failed", exc_info=True)
        if connection is not None:
            # Ending the session releases its advisory lock; close() would only hand the
            # connection back to the pool, lock and all.
            connection.invalidate()
            connection.close()


@dataclass(frozen=True)
class Batch:
    """One batch of the change feed for one model, read under ``term``: what to delete, what
    to write (vectors with their rows, and rows whose metadata changed), and the watermark."""

    collection_id: int
    model: str
    name: str
    term: int | None
    index_type: str
    upto: int
    head: int
    removed: list[int]
    changes: ChangeSet
    remirror: list[int]  # images whose metadata changed: their rows are written again
    # The feed from its start, this target having no watermark yet: a Milvus collection of that
    # name may be another's (a deleted collection whose id SQLite gave out again) or this one's
    # (followed under another spelling of the URI): ``write_batch`` drops it only if it is not.
    fresh: bool = False
    # ``vizdex reindex`` reset the watermark to ``REBUILDING``: drop whatever is there first.
    rebuild: bool = False

    @property
    def touched(self) -> list[int]:
        return sorted({*self.removed, *(int(i) for i in self.changes.added_ids), *self.remirror})


class MilvusVectorStore:
    """The vector store seam (``vector_store.VectorStore``) over Milvus."""

    def __init__(
        self, catalog: Catalog, client: MilvusClient, target: MilvusTarget, settings: IndexSettings
    ) -> None:
        self._catalog = catalog
        self._client = client
        self._target = target
        self._default_index = settings.milvus_index.upper()
        self._batch = settings.milvus_batch
        self._prefix = settings.milvus_prefix
        self._leader = Leadership(catalog, target.key, settings.milvus_lease_s)
        self._follow_lock = threading.RLock()
        self._index_types: dict[str, str] = {}  # Milvus collection -> index type, once known
        self._loaded: set[str] = set()  # Milvus collections this process has seen loaded
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.check_index_type(self._default_index)

    @classmethod
    def open(cls, catalog: Catalog, settings: IndexSettings) -> MilvusVectorStore:
        target = MilvusTarget.parse(settings.vector_store)
        if target.lite:  # milvus-lite creates the file, not the folder it goes in
            try:
                Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise VectorStoreUnavailableError(
                    f"cannot make the folder of the milvus-lite file {target.uri} "
                    f"(VIZDEX_VECTOR_STORE): {error.strerror or error}"
                ) from None
        try:
            client = MilvusClient(uri=target.uri, token=settings.milvus_token)
        except Exception as error:  # pymilvus raises several types for "cannot connect"
            raise VectorStoreUnavailableError(
                f"cannot reach Milvus at {settings.vector_store!r} (VIZDEX_VECTOR_STORE): {error}"
            ) from None
        return cls(catalog, client, target, settings)

    @property
    def name(self) -> str:
        return "milvus-lite" if self._target.lite else "milvus"

    @property
    def target(self) -> MilvusTarget:
        return self._target

    @property
    def client(self) -> MilvusClient:
        return self._client

    def name_of(self, collection_id: int, model: str) -> str:
        """The Milvus collection holding (collection, model)'s vectors."""
        return collection_name(collection_id, model, self._prefix)

    def check_index_type(self, index_type: str) -> str:
        """The index type, upper-cased, or IndexTypeRefusedError when this Milvus cannot build
        it: milvus-lite takes a GPU index type at creation and then never builds it."""
        wanted = index_type.upper()
        if wanted.lower() not in MILVUS_INDEX_TYPES:
            raise IndexTypeRefusedError(
                f"Milvus index type {index_type!r} is not one vizdex builds: use one of "
                f"{', '.join(t.upper() for t in MILVUS_INDEX_TYPES)}",
                index_type=index_type,
            )
        if self._target.lite and wanted in GPU_INDEX_TYPES:
            raise IndexTypeRefusedError(
                f"milvus-lite cannot build a {wanted} index (it would accept it and search "
                "without any index): use FLAT, IVF_FLAT or HNSW here, and GPU index types on a "
                "Milvus standalone or distributed deployment with GPUs",
                index_type=wanted,
            )
        return wanted

    # -- Milvus collections --------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        try:
            return bool(self._client.has_collection(name))
        except MilvusException as error:
            raise _wrap("list its collections", error) from None

    def _searchable(self, name: str) -> bool:
        """Whether the collection exists, loading it first when this process has not yet (a
        reopened Milvus, or a restarted lite file, starts with its collections released)."""
        if name in self._loaded:
            return True
        if not self._exists(name):
            return False
        try:
            state = self._client.get_load_state(name).get("state")
            if "Loaded" not in str(state):
                self._client.load_collection(name)
        except MilvusException as error:
            raise _wrap(f"load collection {name}", error) from None
        self._loaded.add(name)
        return True

    def _create(self, name: str, dim: int, index_type: str, expected: int) -> None:
        index_type = self.check_index_type(index_type)
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(FIELD_ID, DataType.INT64, is_primary=True)
        schema.add_field(FIELD_VECTOR, DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field(FIELD_META, DataType.JSON)
        schema.add_field(FIELD_CREATED, DataType.INT64)
        params = self._client.prepare_index_params()
        params.add_index(
            field_name=FIELD_VECTOR,
            index_type=index_type,
            metric_type="IP",
            params=index_params(index_type, dim, expected),
        )
        try:
            self._client.create_collection(name, schema=schema, index_params=params)
            self._client.load_collection(name)
        except MilvusException as error:
            if "index type" in str(error.message).lower():  # e.g. a GPU type on a CPU build
                self._drop(name)
                raise IndexTypeRefusedError(
                    f"this Milvus cannot build a {index_type} index: {error.message}",
                    index_type=index_type,
                ) from None
            raise _wrap(f"create collection {name}", error) from None
        self.verify_index(name, index_type, wait_s=0.0)
        self._index_types[name] = index_type

    def _probe(self, index_type: str, dim: int) -> None:
        """Builds ``index_type`` over a small collection of random vectors and checks it really
        exists, before a rebuild drops the collection it would replace. A server refuses some
        types it cannot build at creation (GPU_CAGRA on a CPU build) but takes others and then
        retries the build for ever while reporting the index "Finished" over 0 rows
        (GPU_IVF_PQ): only a build over enough rows (Milvus indexes segments of at least
        1,024) shows which."""
        name = f"{self._prefix}_probe_{index_type.lower()}"
        self._drop(name)
        try:
            self._create(name, dim, index_type, PROBE_ROWS)
            vectors = np.random.default_rng(0).standard_normal((PROBE_ROWS, dim))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            rows = [
                {FIELD_ID: i, FIELD_VECTOR: v.tolist(), FIELD_META: {}, FIELD_CREATED: 0}
                for i, v in enumerate(vectors.astype(np.float32))
            ]
            try:
                for start in range(0, len(rows), UPSERT_ROWS):
                    self._client.insert(name, rows[start : start + UPSERT_ROWS])
                self._client.flush(name)
            except MilvusException as error:
                raise _wrap(f"fill the probe collection {name}", error) from None
            self.verify_index(name, index_type, wait_s=PROBE_WAIT_S)
        finally:
            self._drop(name)

    def _reload(self, name: str, index_type: str) -> None:
        """Flush, release and load: milvus-lite builds segment indexes on load, and only then
        fails on a type it cannot build (its describe_index reports any type as built)."""
        for attempt in range(RELOAD_TRIES):
            try:
                self._client.flush(name)
                self._client.release_collection(name)
                self._client.load_collection(name)
                return
            except MilvusException as error:
                # A type lite cannot build fails every time; a load can also meet a segment
                # index file lite is still writing ("No data left in file", seen under load):
                # that one passes when asked again.
                if attempt + 1 == RELOAD_TRIES:
                    raise IndexTypeRefusedError(
                        f"Milvus could not build the {index_type} index of {name}: {error.message}",
                        index_type=index_type,
                    ) from None
                log.warning("loading %s failed (%s); asking again", name, error.message)
                time.sleep(0.5 * (attempt + 1))

    def verify_index(
        self, name: str, index_type: str, *, wait_s: float, stall: bool = False
    ) -> dict[str, Any]:
        """The index Milvus reports for the vector field, checked to be the one asked for and
        (after ``wait_s`` at most) built over every row; IndexTypeRefusedError otherwise. With
        ``stall`` the wait has no overall limit: it ends when ``wait_s`` passes with no new
        indexed row (a large build keeps going as long as Milvus keeps indexing).

        On milvus-lite the collection is flushed and loaded again first: that is when lite
        builds (or fails to build) its indexes, whatever describe_index said before.
        """
        if self._target.lite and wait_s > 0:
            self._reload(name, index_type)
        deadline = time.monotonic() + wait_s
        progress = -1
        while True:
            try:
                names = self._client.list_indexes(name, field_name=FIELD_VECTOR)
                described = self._client.describe_index(name, FIELD_VECTOR) if names else {}
            except MilvusException as error:
                raise _wrap(f"describe the index of {name}", error) from None
            reported = str(described.get("index_type", "")).upper()
            if reported != index_type.upper():
                raise IndexTypeRefusedError(
                    f"Milvus collection {name} has no {index_type} index (it reports "
                    f"{reported or 'none'}): it would be searched without the index asked for",
                    index_type=index_type,
                )
            total = int(described.get("total_rows", 0) or 0)
            built = int(described.get("indexed_rows", 0) or 0)
            if stall and built != progress:  # a merge of segments may also lower the count
                if progress >= 0:
                    log.info("Milvus index of %s: %d of %d rows", name, built, total)
                progress, deadline = built, time.monotonic() + wait_s
            if built >= total or time.monotonic() >= deadline:
                if built < total:
                    waited = "without progress for" if stall else "after"
                    raise IndexTypeRefusedError(
                        f"Milvus built its {index_type} index of {name} over {built} of {total} "
                        f"rows only ({waited} {wait_s:g} s)",
                        index_type=index_type,
                    )
                return dict(described)
            time.sleep(0.5 if not stall else min(5.0, max(0.5, wait_s / 100)))

    def _index_type(self, name: str) -> str:
        known = self._index_types.get(name)
        if known is None:
            try:
                known = str(self._client.describe_index(name, FIELD_VECTOR)["index_type"]).upper()
            except MilvusException as error:
                raise _wrap(f"describe the index of {name}", error) from None
            self._index_types[name] = known
        return known

    def _drop(self, name: str) -> None:
        self._index_types.pop(name, None)
        self._loaded.discard(name)
        try:
            if self._client.has_collection(name):
                self._client.drop_collection(name)
        except MilvusException as error:
            raise _wrap(f"drop collection {name}", error) from None

    # -- following the catalog -----------------------------------------------------------------

    @contextmanager
    def _following(self) -> Iterator[bool]:
        """Holds this process's follow lock; yields whether this process may follow at all."""
        with self._follow_lock:
            yield self._leader.held()

    @property
    def leader_term(self) -> int | None:
        """This process's fencing token while it follows the catalog (None otherwise)."""
        return self._leader.term

    def wait_to_lead(self, timeout_s: float) -> bool:
        """Whether this process becomes the follower within ``timeout_s`` (``vizdex follow
        --once`` after a killed follower, whose lease lapses by itself)."""
        deadline = time.monotonic() + timeout_s
        while not self._leader.held():
            if time.monotonic() >= deadline:
                return False
            time.sleep(LEADER_RETRY_S)
        return True

    @property
    def lease_s(self) -> float:
        return self._leader.lease_s

    def stand_down(self) -> None:
        """Stops following (releases the leadership); the next round may take it again."""
        self._leader.release()

    def store_position_of(self, collection_id: int, model: str) -> int | None:
        """The watermark recorded for (collection, model), None when there is none."""
        position = self._catalog.store_position(self._target.key, collection_id, model)
        return position.applied_seq if position is not None else None

    def _position(self, collection_id: int, model: str) -> tuple[int, str]:
        position = self._catalog.store_position(self._target.key, collection_id, model)
        if position is None:
            return 0, self._default_index
        return position.applied_seq, position.index_type

    def apply_batch(self, collection: CollectionRecord, model: str) -> bool:
        """Applies the next batch of the change feed for one model (caller holds the follow
        lock and the leadership). Returns whether changes remain after it."""
        term = self._leader.term
        # Renews a lease on long catch-ups and rebuilds; a term changed meanwhile means another
        # process led in between: this run stops (its caller stands down).
        if not self._leader.held() or (term is not None and self._leader.term != term):
            raise FollowerFencedError(
                f"the follower of {self._target.key} lost its leadership",
                store=self._target.key,
                term=term,
                current_term=self._leader.term,
            )
        batch = self.read_batch(collection, model)
        if batch is None:
            return False
        self.write_batch(batch)
        return self.commit_batch(batch)

    def read_batch(self, collection: CollectionRecord, model: str) -> Batch | None:
        """The next batch after the watermark (None when caught up), read under this
        process's current term."""
        term = self._leader.term
        position = self._catalog.store_position(self._target.key, collection.id, model)
        applied, index_type = (
            (position.applied_seq, position.index_type)
            if position is not None
            else (0, self._default_index)
        )
        rebuild, applied = applied == REBUILDING, max(applied, 0)
        head = self._catalog.collection_seq(collection.id)
        if applied >= head and not rebuild:
            return None
        upto = min(head, applied + self._batch)
        changes = self._catalog.changes(collection.id, model, after_seq=applied, upto_seq=upto)
        added = {int(i) for i in changes.added_ids}
        remirror = self._catalog.metadata_changes(collection.id, after_seq=applied, upto_seq=upto)
        return Batch(
            collection_id=collection.id,
            model=model,
            name=self.name_of(collection.id, model),
            term=term,
            index_type=index_type,
            upto=upto,
            head=head,
            removed=[int(i) for i in changes.removed_ids if int(i) not in added],
            changes=changes,
            remirror=[i for i in remirror if i not in added],
            fresh=position is None,
            rebuild=rebuild,
        )

    def _foreign(self, batch: Batch) -> bool:
        """Whether the Milvus collection ``batch`` starts to fill holds vectors this feed did
        not write: none of a sample of its rows has the vector the catalog holds for that image
        and model (a collection deleted by a process that does not follow Milvus, its id then
        given out again; a model removed and added again before its Milvus collection was
        dropped; another width). An empty one, or one this feed filled under another target key
        (the same Milvus named another way), is kept: upserts overwrite it."""
        if not self._exists(batch.name):
            return False
        try:
            rows = self._client.query(
                batch.name,
                filter=f"{FIELD_ID} >= 0",
                output_fields=[FIELD_ID, FIELD_VECTOR],
                limit=FOREIGN_SAMPLE,
                consistency_level="Strong",
            )
        except MilvusException as error:
            raise _wrap(f"read rows of {batch.name}", error) from None
        if not rows:
            return False
        held = {int(row[FIELD_ID]): np.asarray(row[FIELD_VECTOR], np.float32) for row in rows}
        ids, vectors = self._catalog.get_vectors(batch.collection_id, batch.model, list(held))
        for image_id, vector in zip(ids, vectors, strict=True):
            mine = held[int(image_id)]
            if mine.shape == vector.shape and np.allclose(mine, vector, atol=SAME_VECTOR_ATOL):
                return False
        log.warning("%s holds vectors this feed did not write: dropped first", batch.name)
        return True

    def write_batch(self, batch: Batch) -> None:
        """Deletes, then upserts (vectors, and rows whose metadata changed), after checking the
        term is still current: an overtaken leader stops before writing, not only at its
        watermark."""
        if batch.term is not None:
            self._catalog.check_store_term(self._target.key, batch.term)
        name, changes = batch.name, batch.changes
        if batch.rebuild or (batch.fresh and self._foreign(batch)):
            self._drop(name)
        exists = self._exists(name)
        if len(changes.added_ids) and not exists:
            _, count, _ = self._catalog.embedding_summary(batch.collection_id, batch.model)
            self._create(name, int(changes.added_vectors.shape[1]), batch.index_type, count)
            exists = True
        if not exists:
            return  # nothing to delete from, nothing to add
        try:
            if batch.removed:
                self._client.delete(name, ids=batch.removed)
            ids, vectors = changes.added_ids, changes.added_vectors
            if batch.remirror:  # the catalog's vector of each, as it is now
                more_ids, more_vectors = self._catalog.get_vectors(
                    batch.collection_id, batch.model, batch.remirror
                )
                if len(ids):
                    ids = np.concatenate([ids, more_ids])
                    vectors = np.concatenate([vectors, more_vectors])
                else:
                    ids, vectors = more_ids, more_vectors
                if vanished := sorted(set(batch.remirror) - {int(i) for i in more_ids}):
                    self._client.delete(name, ids=vanished)  # no vector here (any more)
            if len(ids):
                images = self._catalog.get_images(batch.collection_id, [int(i) for i in ids])
                self._upsert(name, ids, vectors, images)
        except MilvusException as error:
            raise _wrap(f"apply changes to {name}", error) from None

    def commit_batch(self, batch: Batch) -> bool:
        """Moves the watermark to the batch's end, if this process's term is still current.
        Returns whether changes remain after it.

        An overtaken leader (FollowerFencedError) may have written its batch after the new
        leader's newer ones: it puts the batch's images into the feed again, so the current
        leader writes the catalog's state over them, and stands down.
        """
        try:
            written = self._catalog.set_store_position(
                self._target.key,
                batch.collection_id,
                batch.model,
                batch.upto,
                index_type=batch.index_type,
                term=batch.term,
            )
        except FollowerFencedError:
            self._catalog.requeue_images(batch.collection_id, batch.model, batch.touched)
            self.stand_down()
            raise
        if not written:  # removed (or the collection deleted) while this batch went in
            self._drop(batch.name)
            return False
        return batch.upto < batch.head

    def _upsert(
        self,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        images: dict[int, ImageRecord],
    ) -> None:
        rows: list[dict[str, Any]] = []
        for image_id, vector in zip(ids, vectors, strict=True):
            image = images.get(int(image_id))
            if image is None:  # deleted since: its tombstone comes later in the feed
                continue
            rows.append(
                {
                    FIELD_ID: int(image_id),
                    FIELD_VECTOR: vector.astype(np.float32).tolist(),
                    FIELD_META: json_field(dict(image.metadata)),
                    FIELD_CREATED: micros(image.created_at),
                }
            )
        for start in range(0, len(rows), UPSERT_ROWS):
            self._client.upsert(name, rows[start : start + UPSERT_ROWS])

    def catch_up(self, collection: CollectionRecord) -> bool:
        """Applies the feed up to the catalog's head now, if this process is the follower.
        Returns whether it is."""
        with self._following() as leader:
            if not leader:
                return False
            try:
                for model in collection.models:
                    while self.apply_batch(collection, model):
                        pass
            except FollowerFencedError:
                # Fenced before writing (write_batch) or at the watermark (commit_batch): let
                # the leadership go either way, so that this process may take a new term later.
                log.warning("another process took over following the catalog into Milvus")
                self.stand_down()
                return False
            return True

    def follow(self) -> None:
        """One round over every collection (what the background follower repeats), then the
        Milvus collections of deleted collections and removed models go."""
        failed: VectorStoreUnavailableError | None = None
        for collection in self._catalog.list_collections():
            try:
                self.catch_up(collection)
            except CollectionNotFoundError:
                continue
            except VectorStoreUnavailableError as error:  # the other collections go on
                log.error("following collection %r into Milvus: %s", collection.name, error)
                failed = failed or error
        with self._following() as leader:
            if leader:
                self.prune()
        if failed is not None:
            raise failed

    def reindex(self, collection: CollectionRecord, index_type: str | None = None) -> list[str]:
        """Rebuilds the collection's Milvus collections from the catalog (``vizdex reindex``):
        drop, stream every vector in, flush, then verify the index was really built.

        The wait for the index (43 minutes for 1M HNSW vectors on two cores) happens after the
        follow lock is released: this process keeps following other collections meanwhile, and
        rows it adds to the rebuilt one are indexed like any others.
        """
        built: list[tuple[str, str]] = []
        with self._following() as leader:
            if not leader:
                raise VectorStoreUnavailableError(
                    "another process follows the catalog into this Milvus; stop it (or run "
                    "the reindex there) first"
                )
            for model in collection.models:
                _, current = self._position(collection.id, model)
                wanted = self.check_index_type(index_type or current)
                name = self.name_of(collection.id, model)
                dim = self.dim(collection, model)
                if dim is not None and wanted != current.upper() and not self._target.lite:
                    self._probe(wanted, dim)  # refused before the collection is dropped
                # The watermark goes back first: killed after it, the next round finds it at
                # REBUILDING and drops the collection before refilling it (``Batch.rebuild``);
                # dropped first, the collection would be gone with the watermark at the head.
                self._catalog.set_store_position(
                    self._target.key,
                    collection.id,
                    model,
                    REBUILDING,
                    index_type=wanted,
                    term=self._leader.term,
                )
                self._drop(name)
                while self.apply_batch(collection, model):
                    pass
                if self._exists(name):
                    try:
                        self._client.flush(name)
                    except MilvusException as error:
                        raise _wrap(f"flush {name}", error) from None
                built.append((name, wanted))
        for name, wanted in built:
            self.verify_index(name, wanted, wait_s=INDEX_STALL_S, stall=True)
        return [self.name_of(collection.id, model) for model in collection.models]

    def start_following(self, interval_s: float) -> None:
        if self._follower is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.follow()
                except Exception:  # Milvus or the database briefly away: next round
                    log.exception("following the catalog into Milvus failed")
                    self._leader.release()

        self._follower = threading.Thread(target=loop, name="vizdex-milvus-follower", daemon=True)
        self._follower.start()

    # -- the seam ------------------------------------------------------------------------------

    def open_collection(self, collection: CollectionRecord) -> None:
        self.catch_up(collection)

    def sync(self, collection: CollectionRecord) -> None:
        """After a write in this process, applies it to Milvus now. The write is committed to
        the catalog (acknowledged) already: a Milvus that fails here gets it in the follower's
        next round, so the failure is logged rather than answered 503 as if the write failed."""
        # Not long behind the background follower either: it may be stuck on an unreachable
        # Milvus, and it applies this write in its next round anyway.
        if not self._follow_lock.acquire(timeout=SYNC_WAIT_S):
            log.warning("collection %r: Milvus follows this write later", collection.name)
            return
        try:
            self.catch_up(collection)
        except VectorStoreUnavailableError as error:
            log.warning("collection %r: Milvus will follow later: %s", collection.name, error)
        finally:
            self._follow_lock.release()

    def reach(self, collection: CollectionRecord, min_seq: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self.catch_up(collection)
            if all(self._position(collection.id, m)[0] >= min_seq for m in collection.models):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.05, remaining))

    def applied_seqs(self) -> dict[int, int]:
        applied: dict[int, int] = {}
        for position in self._catalog.store_positions(self._target.key):
            seq = max(position.applied_seq, 0)  # REBUILDING: nothing applied yet
            applied[position.collection_id] = min(applied.get(position.collection_id, seq), seq)
        return applied

    def dim(self, collection: CollectionRecord, model: str) -> int | None:
        name = self.name_of(collection.id, model)
        if not self._exists(name):
            return None
        try:
            described = self._client.describe_collection(name)
        except MilvusException as error:
            raise _wrap(f"describe collection {name}", error) from None
        for field in described.get("fields", []):
            if field.get("name") == FIELD_VECTOR:
                return int(field.get("params", {}).get("dim", 0)) or None
        return None

    def info(self, collection: CollectionRecord, model: str) -> IndexInfo:
        """The Milvus collection as an index: its type (``milvus-hnsw``, ...), its row count
        (Milvus's statistics, not a scan), dimensions and the follower's watermark."""
        name = self.name_of(collection.id, model)
        applied, index_type = self._position(collection.id, model)
        count = 0
        if self._exists(name):
            index_type = self._index_type(name)
            try:
                count = self._row_count(name)
            except MilvusException as error:
                raise _wrap(f"count the rows of {name}", error) from None
        return IndexInfo(
            collection_id=collection.id,
            model=model,
            kind=f"milvus-{index_type.lower()}",
            device=self.name,
            count=count,
            dim=self.dim(collection, model) or 0,
            last_seq=applied,
            nlist=0,
            nprobe=0,
            retraining=False,
            path=Path(self._target.uri) if self._target.lite else Path(name),
        )

    def _owned(self) -> list[str]:
        """The Milvus collections under this catalog's prefix."""
        try:
            names = self._client.list_collections()
        except MilvusException as error:
            raise _wrap("list its collections", error) from None
        # Exactly collection_name's shape: another catalog's prefix may start with this one.
        mine = re.compile(rf"{re.escape(self._prefix)}_[0-9]+_[0-9a-f]{{12}}")
        return [name for name in names if mine.fullmatch(name)]

    def _row_count(self, name: str) -> int:
        """Rows now, by ``count(*)`` at strong consistency: a server's collection statistics
        count flushed segments only (0 right after inserts), lite's count everything."""
        if not self._searchable(name):
            return 0
        rows = self._client.query(
            name, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def drop_collection(self, collection_id: int) -> None:
        """Drops a deleted collection's Milvus collections. The delete is committed already: a
        Milvus that fails here is logged, and the follower's ``prune`` drops them later."""
        try:
            for name in self._owned():
                if name.startswith(f"{self._prefix}_{collection_id}_"):
                    self._drop(name)
        except VectorStoreUnavailableError as error:
            log.warning("collection %d's Milvus collections go later: %s", collection_id, error)

    def drop_model(self, collection_id: int, model: str) -> None:
        """Drops the Milvus collection of a model removed from the collection (the catalog
        dropped its vectors and watermark in the same transaction that removed it); as
        ``drop_collection``, a failing Milvus leaves it to ``prune``."""
        try:
            with self._follow_lock:  # not while this process applies a batch to it
                self._drop(self.name_of(collection_id, model))
        except VectorStoreUnavailableError as error:
            log.warning("model %r's Milvus collection goes later: %s", model, error)

    def prune(self) -> list[str]:
        """Drops the Milvus collections under this prefix that no collection and model of the
        catalog has any more: what a deletion or model removal left behind when the process
        that made it did not drop them (another store configured, or a batch in flight that
        re-created one). Returns their names."""
        wanted = {
            self.name_of(collection.id, model)
            for collection in self._catalog.list_collections()
            for model in collection.models
        }
        stale = [name for name in self._owned() if name not in wanted]
        for name in stale:
            log.info("dropping Milvus collection %s: the catalog no longer has it", name)
            self._drop(name)
        return stale

    def count(self, collection: CollectionRecord, model: str) -> int:
        """Rows Milvus holds for (collection, model), counted by a query (tests, checks)."""
        return len(self.ids(collection, model))

    def ids(self, collection: CollectionRecord, model: str) -> np.ndarray:
        """Every id Milvus holds for (collection, model), sorted (O(N): tests and checks)."""
        name = self.name_of(collection.id, model)
        if not self._searchable(name):
            return np.zeros(0, dtype=np.int64)
        # Windows of ids, each holding at most MAX_TOPK rows, until count(*) rows are found (a
        # query iterator takes its snapshot time from the client's clock when the server does
        # not hand one out, as Milvus 2.3 does not, and can then miss the newest rows).
        total = self._row_count(name)
        highest = self._catalog.highest_image_id(collection.id)
        found: list[int] = []
        start = 0
        try:
            while len(found) < total and start <= highest:
                window = f"{FIELD_ID} >= {start} and {FIELD_ID} < {start + MAX_TOPK}"
                rows = self._client.query(
                    name,
                    filter=window,
                    output_fields=[FIELD_ID],
                    limit=MAX_TOPK,
                    consistency_level="Strong",
                )
                found.extend(int(row[FIELD_ID]) for row in rows)
                start += MAX_TOPK
        except MilvusException as error:
            raise _wrap(f"read the ids of {name}", error) from None
        return np.sort(np.asarray(found, dtype=np.int64))

    def vectors(
        self, collection: CollectionRecord, model: str, ids: Sequence[int]
    ) -> dict[int, np.ndarray]:
        """The vectors Milvus holds for ``ids`` (tests compare them with the catalog's)."""
        name = self.name_of(collection.id, model)
        if not self._searchable(name):
            return {}
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), UPSERT_ROWS):
            part = [int(i) for i in ids[start : start + UPSERT_ROWS]]
            try:
                rows = self._client.get(
                    name, ids=part, output_fields=[FIELD_VECTOR], consistency_level="Strong"
                )
            except MilvusException as error:
                raise _wrap(f"read vectors of {name}", error) from None
            for row in rows:
                found[int(row[FIELD_ID])] = np.asarray(row[FIELD_VECTOR], dtype=np.float32)
        return found

    def rank(
        self,
        collection: CollectionRecord,
        model: str,
        query: np.ndarray,
        need: int,
        options: SearchOptions,
        exclude: frozenset[int],
        *,
        skip: int = 0,
    ) -> Ranked:
        """Milvus ranks with the filters and the offset (``skip``) pushed down; the hits' rows
        come from the catalog.

        ``min_score`` becomes a range search (and still cuts the list, exactly). Milvus answers
        at most 16,384 hits past the offset's start (offset + limit): a deeper page is refused
        (PageTooDeepError, 422). A hit whose row is gone (deleted a moment ago, the follower not
        there yet) or whose metadata no longer matches (changed since it was mirrored) is
        dropped, and the page is asked again deeper until it is full or Milvus has nothing
        more; such a hit among the skipped ones is not seen, so it shifts the page by one until
        the follower applies the change (``min_seq`` waits for that).
        """
        if skip + need > MAX_TOPK:
            raise PageTooDeepError(
                f"offset {skip} + k {need} is more than the {MAX_TOPK:,} hits Milvus answers per "
                "query: narrow the search with filters or min_score instead of paging this deep",
                offset=skip,
                k=need,
                max_depth=MAX_TOPK,
            )
        if self._leader.held():  # as the FAISS store syncs on query: this process writes too
            self.catch_up(collection)
        name = self.name_of(collection.id, model)
        if not self._searchable(name):
            return Ranked(hits=[], images={}, approximate=False)
        filters = options.active_filters
        expression = filter_expression(filters, exclude)
        index_type = self._index_type(name)
        deepest = MAX_TOPK - skip
        limit = need
        vector = np.asarray(query, dtype=np.float32).tolist()
        images: dict[int, ImageRecord] = {}
        while True:
            found = self._search(
                name, vector, Page(skip, limit), expression, index_type, options.min_score
            )
            missing = [i for i, _ in found if i not in images]
            images.update(self._catalog.get_images(collection.id, missing))
            hits: list[tuple[int, float]] = []
            for image_id, score in found:
                if options.min_score is not None and score < options.min_score:
                    break
                image = images.get(image_id)
                if image is None or (filters is not None and not filters.matches(image)):
                    continue
                hits.append((image_id, score))
                if len(hits) >= need:
                    break
            if len(hits) >= need or len(found) < limit or limit >= deepest:
                break
            if options.min_score is not None and found and found[-1][1] < options.min_score:
                break
            limit = min(2 * limit + (limit - len(hits)), deepest)
        return Ranked(hits=hits[:need], images=images, approximate=index_type != "FLAT")

    def range_search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        threshold: float,
        *,
        nprobe: int | None = None,
    ) -> RangeOutput:
        """Every vector scoring at least ``threshold`` with each query, from Milvus's own range
        search (``radius``), in FAISS's layout (what duplicate scans read). Milvus answers at
        most 16,384 hits per query: a query that has more is refused (TooManyNeighboursError).
        ``nprobe`` is ignored: Milvus probes 64 IVF lists, as for every search."""
        matrix = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        name = self.name_of(collection.id, model)
        lims = np.zeros(len(matrix) + 1, dtype=np.int64)
        if not len(matrix) or not self._searchable(name):
            empty = np.zeros(0, dtype=np.int64)
            return RangeOutput(lims, np.zeros(0, np.float32), empty, False, 0)
        index_type = self._index_type(name)
        found: list[list[tuple[int, float]]] = [[] for _ in range(len(matrix))]
        pending, limit = list(range(len(matrix))), RANGE_FIRST_LIMIT
        while pending:
            full: list[int] = []
            for start in range(0, len(pending), RANGE_QUERIES):
                part = pending[start : start + RANGE_QUERIES]
                answers = self._range(name, matrix[part], limit, threshold, index_type)
                for row, hits in zip(part, answers, strict=True):
                    found[row] = hits
                    if len(hits) >= limit:
                        full.append(row)  # it may have more: ask it again, deeper
            if full and limit >= MAX_TOPK:
                raise TooManyNeighboursError(
                    f"an image has more than {MAX_TOPK:,} neighbours at or above {threshold:g} "
                    "(Milvus answers at most that many per query): raise the threshold",
                    threshold=threshold,
                    max_neighbours=MAX_TOPK,
                )
            pending, limit = full, min(8 * limit, MAX_TOPK)
        lims[1:] = np.cumsum([len(hits) for hits in found])
        ids = np.asarray([i for hits in found for i, _ in hits], dtype=np.int64)
        scores = np.asarray([s for hits in found for _, s in hits], dtype=np.float32)
        approximate = index_type != "FLAT"
        probes = search_params(index_type, 1).get("nprobe", 0)
        return RangeOutput(lims, scores, ids, approximate, int(probes))

    def _range(
        self, name: str, queries: np.ndarray, limit: int, threshold: float, index_type: str
    ) -> list[list[tuple[int, float]]]:
        params = search_params(index_type, limit)
        params.update(radius=float(threshold) - RANGE_SLACK, range_filter=RANGE_CEILING)
        try:
            result = self._client.search(
                name,
                data=queries.tolist(),
                limit=limit,
                output_fields=[],
                search_params={"metric_type": "IP", "params": params},
                consistency_level="Strong",
            )
        except MilvusException as error:
            raise _wrap(f"range search {name}", error) from None
        return [[(int(hit["id"]), float(hit["distance"])) for hit in hits] for hits in result]

    def _search(
        self,
        name: str,
        vector: list[float],
        page: Page,
        expression: str,
        index_type: str,
        min_score: float | None,
    ) -> list[tuple[int, float]]:
        params = search_params(index_type, page.offset + page.limit)
        if min_score is not None:  # a range search: Milvus returns only scores above radius
            params.update(radius=min_score - RANGE_SLACK, range_filter=RANGE_CEILING)
        try:
            result = self._client.search(
                name,
                data=[vector],
                limit=page.limit,
                offset=page.offset,
                filter=expression,
                output_fields=[],
                search_params={"metric_type": "IP", "params": params},
                consistency_level="Strong",
            )
        except MilvusException as error:
            raise _wrap(f"search {name}", error) from None
        return [(int(hit["id"]), float(hit["distance"])) for hit in result[0]]

    def close(self) -> None:
        self._stop.set()
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.join()
        self._leader.release()
        try:
            self._client.close()
        except Exception:  # closing is best effort: the process may be stopping anyway
            log.debug("closing the Milvus client failed", exc_info=True)
