"""Exact vectors of one (collection, model) in a memory-mapped float16 file, for re-ranking.

A compressed index (IVF with PQ codes) finds candidates from approximate scores; re-ranking them
needs their exact vectors, many at a time and fast. Reading them from the catalog row by row is
too slow, and keeping them in RAM is what compression avoids, so they live here: a file derived
from the catalog like the index, mapped into memory, where only the pages of the rows a query
touches are read.

Layout: a 4 KiB header (magic, dimension, capacity, committed row count and sequence number, the
owner, the CRC-32 of the last, partly filled block of rows, a CRC of the header), then
``capacity`` int64 ids, then ``capacity`` float16 rows, then one CRC-32 per full block of rows
(``block_rows``: 16 KiB of rows, 16 at 512 dimensions). Rows are appended; a removed row gets id
-1 in place; a full file is rewritten, without its removed rows, to a new name at twice the size
(the file is sparse: capacity not yet used takes no disk).

Row checksums: committed rows never change in place (appends go past them), so each block's CRC
is written once, when a commit fills it, before the header that counts its rows. Blocks are
verified at open up to ``VERIFY_AT_OPEN`` bytes of rows (every block of a file up to 64 MiB), the
rest the first time a search reads one of their rows; a block that fails is ``damaged``: its
rows are reported missing (searches keep their approximate scores) and the owner rebuilds the
file from the catalog. Ids are not in the row checksums (removals rewrite them in place): the
index compares the file's ids with its own when it loads.

Crash safety: the header says which rows and which sequence number are committed, and is written
(after the rows it covers are flushed) only when the index snapshot it belongs to is written.
After a crash the committed rows are whole; rows appended later lie past the committed count and
are overwritten; removals applied in place after the commit are applied again, harmlessly, when
the catalog's changes after the committed number are replayed. A short file, a bad header, or
one that belongs to another collection, model or sequence number raises ``VectorFileError`` and
the caller rebuilds it from the catalog.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mmap
import os
import struct
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vizdex.search.errors import IndexCorruptError
from vizdex.search.float16 import from_float16, to_float16
from vizdex.search.index_file import replacing

log = logging.getLogger(__name__)

MAGIC = b"VZDXF16\x01"
VERSION = 2  # 2: per-block row checksums (a version 1 file is rebuilt from the catalog)
HEADER_SIZE = 4096
SUFFIX = ".f16"
MIN_CAPACITY = 1024
GROWTH_ROOM = 3  # rows of capacity per row at creation (sparse: free until used)
# magic, version, dim, capacity, count, last_seq, collection id, sha1 of the model name, CRC of
# the partly filled last block's rows
_HEADER = struct.Struct("<8sIIQQQQ20sI")
_CRC = struct.Struct("<I")
_PAGE = 4096
_WRITE_CHUNK = 65_536  # rows converted to float16 and written at a time (bounds temporary memory)
# Ids appended since the sorted map was built are looked up in a dict until there are this many.
_RECENT_MAX = 65_536
BLOCK_BYTES = 16_384  # rows per checksum: small, so a search verifying a block reads little
VERIFY_AT_OPEN = 64 << 20  # bytes of rows verified when the file opens; the rest on first read


class VectorFileError(IndexCorruptError):
    """The vector file is short, damaged, or not the one expected: rebuild it from the catalog."""


def _model_digest(model: str) -> bytes:
    return hashlib.sha1(model.encode("utf-8")).digest()


def _align(size: int) -> int:
    return (size + _PAGE - 1) // _PAGE * _PAGE


def block_rows(dim: int) -> int:
    return max(1, BLOCK_BYTES // (2 * dim))


def _layout(dim: int, capacity: int) -> tuple[int, int, int, int]:
    """(offset of the ids, offset of the vectors, offset of the block CRCs, file size)."""
    vectors_at = HEADER_SIZE + _align(8 * capacity)
    sums_at = vectors_at + _align(2 * dim * capacity)
    blocks = -(-capacity // block_rows(dim))
    return HEADER_SIZE, vectors_at, sums_at, sums_at + _align(4 * blocks)


def _pack_header(
    dim: int,
    capacity: int,
    count: int,
    last_seq: int,
    collection_id: int,
    model: str,
    tail_crc: int,
) -> bytes:
    body = _HEADER.pack(
        MAGIC,
        VERSION,
        dim,
        capacity,
        count,
        last_seq,
        collection_id,
        _model_digest(model),
        tail_crc,
    )
    return body + _CRC.pack(zlib.crc32(body))


class _BlockSums:
    """CRC-32s of consecutive blocks of ``block`` bytes, fed in pieces of any size."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.done: list[int] = []
        self.tail = 0  # CRC of the bytes of the unfinished block so far
        self._filled = 0

    def feed(self, data: memoryview) -> None:
        while len(data):
            take = min(len(data), self.block - self._filled)
            self.tail = zlib.crc32(data[:take], self.tail)
            self._filled += take
            data = data[take:]
            if self._filled == self.block:
                self.done.append(self.tail)
                self.tail, self._filled = 0, 0


def file_name(stem: str) -> str:
    """A new, unique name: a retrain writes its file beside the live one, never over it."""
    return f"{stem}-{uuid.uuid4().hex[:12]}{SUFFIX}"


@dataclass(frozen=True)
class VectorFilePlace:
    """Where one (collection, model)'s vector files live: ``<stem>-<unique>.f16``."""

    stem: Path
    collection_id: int
    model: str

    def create(
        self,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        *,
        count: int,
        dim: int,
        last_seq: int,
    ) -> VectorFile:
        path = self.stem.with_name(file_name(self.stem.name))
        return VectorFile.create(
            path,
            batches,
            count=count,
            collection_id=self.collection_id,
            model=self.model,
            dim=dim,
            last_seq=last_seq,
        )

    def open(self, name: str, *, dim: int, last_seq: int) -> VectorFile:
        """The file ``name`` (a bare name in the stem's folder), committed at ``last_seq``."""
        if "/" in name or not name.startswith(self.stem.name + "-") or not name.endswith(SUFFIX):
            raise VectorFileError(f"{name!r} is not one of this index's vector files")
        opened = VectorFile(
            self.stem.with_name(name), collection_id=self.collection_id, model=self.model, dim=dim
        )
        if opened.last_seq != last_seq:
            opened.close()
            raise VectorFileError(
                f"{name}: committed at sequence {opened.last_seq}, its index at {last_seq}"
            )
        return opened


# posix_fallocate's answers where the file system cannot allocate ahead (writes still work).
_NO_FALLOCATE = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


class VectorFile:
    """One mapped vector file. Not thread-safe: its owner (``VectorIndex``) serialises
    mutations against lookups with its read/write lock."""

    def __init__(self, path: Path, *, collection_id: int, model: str, dim: int) -> None:
        self.path = path
        self.collection_id = collection_id
        self.model = model
        self.dim = dim
        try:
            with open(path, "r+b") as handle:  # the map keeps its own descriptor
                size = self._read_header(handle, collection_id, model, dim)
                self._map = mmap.mmap(handle.fileno(), size)
            # Re-ranking reads scattered rows: without this, each page fault reads ahead up to
            # 128 KiB around it and the whole file soon sits in memory.
            self._map.madvise(mmap.MADV_RANDOM)
        except OSError as error:
            # A FIFO or a device is refused by the buffered open (not seekable), without errno.
            raise VectorFileError(f"{path.name}: unreadable: {error.strerror or error}") from None
        ids_at, vectors_at, sums_at, _ = _layout(dim, self.capacity)
        self._ids = np.frombuffer(self._map, dtype="<i8", count=self.capacity, offset=ids_at)
        self._vectors = np.frombuffer(
            self._map, dtype="<f2", count=self.capacity * dim, offset=vectors_at
        ).reshape(self.capacity, dim)
        self._block = block_rows(dim)
        blocks = -(-self.capacity // self._block)
        self._sums = np.frombuffer(self._map, dtype="<u4", count=blocks, offset=sums_at)
        self._verified = np.zeros(blocks, dtype=bool)
        self.damaged = False  # a block failed its checksum: rebuild the file
        self._verify_at_open()
        self._index_positions()

    def _read_header(self, handle: BinaryIO, collection_id: int, model: str, dim: int) -> int:
        """Checks the header against the owner and the file's size; returns the size to map."""
        name = self.path.name
        raw = handle.read(_HEADER.size + _CRC.size)
        if len(raw) < _HEADER.size + _CRC.size:
            raise VectorFileError(f"{name}: truncated header")
        body, (crc,) = raw[: _HEADER.size], _CRC.unpack(raw[_HEADER.size :])
        if zlib.crc32(body) != crc:
            raise VectorFileError(f"{name}: header checksum mismatch")
        magic, version, fdim, capacity, count, last_seq, owner, digest, tail = _HEADER.unpack(body)
        if magic != MAGIC or version != VERSION:
            raise VectorFileError(f"{name}: not a vizdex vector file")
        if owner != collection_id or digest != _model_digest(model) or fdim != dim:
            raise VectorFileError(f"{name}: belongs to another collection or model")
        if count > capacity:
            raise VectorFileError(f"{name}: header counts more rows than it holds")
        size = _layout(dim, capacity)[3]
        if os.fstat(handle.fileno()).st_size < size:
            raise VectorFileError(f"{name}: truncated ({capacity:,} rows announced)")
        self.capacity = int(capacity)
        self.count = int(count)  # rows in use, removed ones included
        self.last_seq = int(last_seq)  # what the header says is committed
        self._tail_crc = int(tail)
        return size

    # -- creation -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        *,
        count: int,
        collection_id: int,
        model: str,
        dim: int,
        last_seq: int,
        capacity: int | None = None,
    ) -> VectorFile:
        """Writes ``count`` rows from (ids, vectors) batches to a new file at ``path`` (temp
        file, fsync, rename), committed at ``last_seq``, and opens it. Room for three times
        ``count`` rows unless ``capacity`` says more: the index is retrained (with a new file)
        when it has doubled, so this one should never need to grow, which blocks searches."""
        capacity = max(MIN_CAPACITY, GROWTH_ROOM * count, capacity or 0)
        ids_at, vectors_at, sums_at, size = _layout(dim, capacity)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        sums = _BlockSums(2 * dim * block_rows(dim))
        with replacing(path, "w+b") as handle:
            handle.truncate(size)  # sparse: the unused capacity costs no disk
            for ids, vectors in batches:
                if written + len(ids) > capacity:
                    raise ValueError("more rows than the file was sized for")
                rows = np.asarray(vectors).reshape(len(ids), dim)
                handle.seek(ids_at + 8 * written)
                handle.write(np.ascontiguousarray(ids, dtype="<i8").tobytes())
                for start in range(0, len(ids), _WRITE_CHUNK):
                    data = to_float16(rows[start : start + _WRITE_CHUNK]).data.cast("B")
                    handle.seek(vectors_at + 2 * dim * (written + start))
                    handle.write(data)
                    sums.feed(data)
                written += len(ids)
            handle.seek(sums_at)
            handle.write(np.asarray(sums.done, dtype="<u4").tobytes())
            handle.seek(0)
            handle.write(
                _pack_header(dim, capacity, written, last_seq, collection_id, model, sums.tail)
            )
        return cls(path, collection_id=collection_id, model=model, dim=dim)

    # -- lookups --------------------------------------------------------------------------------

    def _index_positions(self) -> None:
        """The id -> row map: a sorted array (one argsort at load) plus a dict of recent rows."""
        ids = self._ids[: self.count]
        live = np.flatnonzero(ids >= 0)
        order = np.argsort(ids[live], kind="stable")
        self._sorted_ids = np.ascontiguousarray(ids[live][order])
        self._sorted_rows = live[order].astype(np.int64)
        self._recent: dict[int, int] = {}

    def positions(self, ids: np.ndarray, *, prefetch: bool = False) -> np.ndarray:
        """Row of each id, or -1 where the file does not hold it. ``prefetch``: also ask the
        kernel at once for the pages of those rows' vectors (see ``_prefetch``)."""
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.full(len(wanted), -1, dtype=np.int64)
        if len(self._sorted_ids):
            at = np.minimum(np.searchsorted(self._sorted_ids, wanted), len(self._sorted_ids) - 1)
            hit = self._sorted_ids[at] == wanted
            rows[hit] = self._sorted_rows[at[hit]]
        if self._recent:  # newer than the sorted map: a re-added id has its new row here
            for slot, image_id in enumerate(wanted.tolist()):
                rows[slot] = self._recent.get(image_id, rows[slot])
        valid = rows >= 0
        if prefetch:
            self._prefetch(rows[valid])
        # A removed row keeps its place in the map: its id in the file says -1 now.
        valid[valid] = self._ids[rows[valid]] == wanted[valid]
        rows[~valid] = -1
        return rows

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 rows, found mask) for ``ids``; rows not found, or in a block that fails its
        checksum, are zeros."""
        rows = self.positions(ids, prefetch=True)
        found = rows >= 0
        if found.any():
            found[found] = self._blocks_ok(rows[found])
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        if found.any():
            out[found] = from_float16(self._vectors[rows[found]])
            finite = np.asarray(np.isfinite(out).all(axis=1), dtype=bool)
            if not finite[found].all():
                # A block verified earlier reads back as NaN/inf now (written to while mapped,
                # or a bad page read again from disk): its rows are missing, the file rebuilt.
                self.damaged = True
                log.error("%s: rows changed since they were checked", self.path.name)
                found &= finite
                out[~found] = 0.0
        return out, found

    def _prefetch(self, rows: np.ndarray) -> None:
        """Asks the kernel, in one go, for the checksum blocks of ``rows`` not verified yet (the
        whole block is about to be read to check it). Re-ranking reads ~100-400 scattered rows
        per query: faulted in one page at a time, each waits a full disk round trip (40 ms for
        100 rows of a cold 1M file on this VM, seconds on slower disks), while the same reads
        requested together are served in parallel (4 ms). Verified blocks were read once
        already and are left to the page cache: a warm query makes no call at all. Advice
        only: an error here is not the search's."""
        if len(rows) < 2:
            return
        blocks = np.unique(rows // self._block)
        blocks = blocks[~self._verified[blocks]]
        if not len(blocks):
            return
        block_bytes = 2 * self.dim * self._block
        starts = _layout(self.dim, self.capacity)[1] + blocks * block_bytes
        first = starts // mmap.PAGESIZE
        last = (np.minimum(starts + block_bytes, len(self._map)) - 1) // mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            for page, end_page in zip(first.tolist(), last.tolist(), strict=True):
                self._map.madvise(
                    mmap.MADV_WILLNEED, page * mmap.PAGESIZE, (end_page - page + 1) * mmap.PAGESIZE
                )

    # -- checksums ------------------------------------------------------------------------------

    def _block_crc(self, block: int, stop: int) -> int:
        rows = self._vectors[block * self._block : stop]
        return zlib.crc32(np.ascontiguousarray(rows).data.cast("B"))

    def _check_block(self, block: int) -> bool:
        """Whether the committed rows of ``block`` match their CRC (the last block's is in the
        header). Rows appended since the last commit are not covered yet."""
        full = self.committed // self._block
        if block < full:
            ok = self._block_crc(block, (block + 1) * self._block) == int(self._sums[block])
        elif block == full:
            ok = self._block_crc(block, self.committed) == self._tail_crc
        else:
            return True
        if not ok:
            self.damaged = True
            log.error("%s: rows %d.. fail their checksum", self.path.name, block * self._block)
        self._verified[block] = ok or self._verified[block]
        return ok

    def _blocks_ok(self, rows: np.ndarray) -> np.ndarray:
        """Per row: whether its block is verified (checking it now if it is not)."""
        blocks = rows // self._block
        pending = np.unique(blocks[~self._verified[blocks]])
        bad = [int(b) for b in pending if not self._check_block(int(b))]
        return ~np.isin(blocks, bad) if bad else np.ones(len(rows), dtype=bool)

    def _verify_at_open(self) -> None:
        """Checks the first ``VERIFY_AT_OPEN`` bytes of rows (all of a small file); raises on a
        mismatch, so that the caller rebuilds the file before using it."""
        self.committed = self.count
        budget = VERIFY_AT_OPEN // (2 * self.dim * self._block)
        for block in range(min(budget, -(-self.committed // self._block))):
            if not self._check_block(block):
                self.close()
                raise VectorFileError(
                    f"{self.path.name}: rows {block * self._block:,}.. fail their checksum"
                )

    def live_ids(self) -> np.ndarray:
        ids = self._ids[: self.count]
        return np.array(ids[ids >= 0])

    # -- changes --------------------------------------------------------------------------------

    def reserve(self, rows: int) -> None:
        """Makes room on disk for ``rows`` more rows before anything changes (grows the file
        first if they do not fit). The file is sparse and rows are written through the map: a
        store into a hole the full disk cannot back kills the process with SIGBUS instead of
        raising, so the blocks are allocated here, where a full disk is an ``OSError`` (ENOSPC)."""
        if rows <= 0:
            return
        if self.count + rows > self.capacity:
            self._grow(rows)
        ids_at, vectors_at, sums_at, _ = _layout(self.dim, self.capacity)
        first, end = self.count, self.count + rows
        first_block, end_block = first // self._block, -(-end // self._block)
        spans = (
            (ids_at + 8 * first, 8 * rows),
            (vectors_at + 2 * self.dim * first, 2 * self.dim * rows),
            (sums_at + 4 * first_block, 4 * (end_block - first_block)),
        )
        handle = os.open(self.path, os.O_RDWR)
        try:
            for offset, length in spans:
                try:
                    os.posix_fallocate(handle, offset, length)
                except OSError as error:
                    if error.errno in _NO_FALLOCATE:  # a file system that cannot reserve
                        return
                    raise OSError(error.errno, error.strerror, str(self.path)) from None
        finally:
            os.close(handle)

    def apply(self, removed_ids: np.ndarray, added_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Removals (in place), then additions (appended; an id already held is replaced).
        The caller has ``reserve``d the added rows (``VectorIndex.apply`` does, before it
        changes FAISS), so a full disk was refused before anything here or there changed."""
        removed = np.asarray(removed_ids, dtype=np.int64)
        added = np.asarray(added_ids, dtype=np.int64)
        gone = self.positions(np.concatenate([removed, added]))
        gone = gone[gone >= 0]
        self._ids[gone] = -1
        if not len(added):
            return
        if self.count + len(added) > self.capacity:
            self._grow(len(added))
        start = self.count
        self._vectors[start : start + len(added)] = to_float16(vectors)
        self._ids[start : start + len(added)] = added
        self.count += len(added)
        for offset, image_id in enumerate(added.tolist()):
            self._recent[image_id] = start + offset
        if len(self._recent) > _RECENT_MAX:
            self._index_positions()

    def _grow(self, extra: int) -> None:
        """Moves the live rows to a new file with room to spare (removed rows are dropped).

        The new file's header commits nothing new: its rows are the state at ``last_seq`` plus
        the changes applied since, which a replay from ``last_seq`` would apply twice. So it gets
        the sequence number of the state it holds only at the next ``commit``, like any file.
        """
        live = np.flatnonzero(self._ids[: self.count] >= 0)
        total = len(live) + extra

        def batches() -> Iterable[tuple[np.ndarray, np.ndarray]]:
            for start in range(0, len(live), _WRITE_CHUNK):
                rows = live[start : start + _WRITE_CHUNK]
                yield np.array(self._ids[rows]), self._vectors[rows]

        stem = self.path.name.rsplit("-", 1)[0]
        grown = VectorFile.create(
            self.path.with_name(file_name(stem)),
            batches(),
            count=len(live),
            collection_id=self.collection_id,
            model=self.model,
            dim=self.dim,
            last_seq=0,  # not referenced by any snapshot until committed: see the docstring
            capacity=2 * total,
        )
        self.close()
        self.__dict__.update(grown.__dict__)

    def commit(self, last_seq: int) -> None:
        """Writes the checksums of the blocks filled since the last commit and flushes them with
        the rows, then writes the header that makes them (and ``last_seq``) count."""
        for block in range(self.committed // self._block, self.count // self._block):
            self._sums[block] = self._block_crc(block, (block + 1) * self._block)
            self._verified[block] = True  # written from memory just now
        full = self.count // self._block
        tail = self._block_crc(full, self.count) if full * self._block < self.count else 0
        self._map.flush()
        header = _pack_header(
            self.dim, self.capacity, self.count, last_seq, self.collection_id, self.model, tail
        )
        self._map[: len(header)] = header
        self._map.flush(0, _PAGE)
        self.last_seq = last_seq
        self.committed, self._tail_crc = self.count, tail

    def close(self) -> None:
        # Views into the map must go before the map can close.
        self._ids = np.zeros(0, dtype="<i8")
        self._vectors = np.zeros((0, self.dim), dtype="<f2")
        self._sums = np.zeros(0, dtype="<u4")
        with contextlib.suppress(BufferError):  # a view still lives: the map goes with it
            self._map.close()
