"""One vector index per (collection, model): its slot in memory and its snapshot file on disk.

A slot holds the loaded index with what is known about it (its generation, what the file on disk
holds); the file is a snapshot the catalog's changes are replayed onto at start-up.

A re-ranked (compressed) index is saved as files of its own beside the snapshot, which names
them: the FAISS index (``<stem>-<unique>.faiss``, memory-mapped at start-up) and its exact
vectors (``<stem>-<unique>.f16``, see ``vector_file``). New files get new names and the snapshot's
rename switches to them, so a crash leaves the old set whole; files nothing names are removed.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.errors import IndexCorruptError
from vizdex.search.index import (
    INDEX_FILE_SUFFIX,
    IndexBackend,
    IndexPolicy,
    IndexSpec,
    VectorIndex,
)
from vizdex.search.index_file import move_aside, read_snapshot, write_snapshot
from vizdex.search.vector_file import SUFFIX as VECTOR_FILE_SUFFIX
from vizdex.search.vector_file import VectorFileError

log = logging.getLogger(__name__)

FILE_SUFFIX = ".vdx"


def index_file_name(model: str) -> str:
    """A readable, collision-free file name for a model name such as ``org/model``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"
    return f"{slug}-{hashlib.sha1(model.encode()).hexdigest()[:8]}{FILE_SUFFIX}"


_SIDE_FILE = re.compile(
    rf"[0-9a-f]{{12}}(?:{re.escape(INDEX_FILE_SUFFIX)}|{re.escape(VECTOR_FILE_SUFFIX)})"
)


def side_files(stem: Path) -> list[Path]:
    """The index and vector files ``<stem>-<unique>.faiss|.f16`` of one slot - and not those
    of another model whose stem merely begins with this one (``m-1234abcd-x-...``)."""
    prefix = stem.name + "-"
    return [
        path
        for path in stem.parent.glob(glob.escape(prefix) + "*")
        if _SIDE_FILE.fullmatch(path.name[len(prefix) :])
    ]


@dataclass
class Slot:
    collection_id: int
    model: str
    policy: IndexPolicy
    path: Path
    mutex: threading.Lock = field(default_factory=threading.Lock)
    save_lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    index: VectorIndex | None = None
    empty_seq: int = 0  # the catalog position while there is no vector yet (no dimension known)
    generation: int = 0  # bumped whenever ``index`` is replaced
    saved: tuple[int, int] = (-1, -1)  # (generation, last_seq) of the file on disk
    retraining: bool = False
    snapshot_queued: bool = False
    repair_queued: bool = False  # its exact vectors failed a checksum: a rebuild is queued
    dropped: bool = False
    files: frozenset[str] = frozenset()  # the files beside it that the snapshot on disk names

    @property
    def seq(self) -> int:
        return self.index.last_seq if self.index is not None else self.empty_seq

    @property
    def stem(self) -> Path:
        """Files of this slot's index other than the snapshot are named ``<stem>-...``."""
        return self.path.with_suffix("")


def _own_file(slot: Slot, name: object, suffix: str) -> Path:
    if (
        not isinstance(name, str)
        or "/" in name
        or not name.startswith(slot.stem.name + "-")
        or not name.endswith(suffix)
    ):
        raise IndexCorruptError(f"the snapshot names {name!r}, not one of its own files")
    return slot.path.with_name(name)


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file: a FIFO where the snapshot's index
    file belongs blocked a plain open, and with it the server's start, for ever."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise IndexCorruptError(f"{path.name}: not a regular file")
        return open(descriptor, "rb")  # the caller's with closes it
    except BaseException:
        os.close(descriptor)
        raise


def _open_files(
    slot: Slot, header: dict[str, Any], spec: IndexSpec, backend: IndexBackend, last_seq: int
) -> VectorIndex:
    """The memory-mapped index file the snapshot names (verified whole), with its exact
    vectors when their file is whole and committed at the same number (else they are rebuilt
    from the catalog by the caller: ``needs_exact``)."""
    path = _own_file(slot, header.get("index_file"), INDEX_FILE_SUFFIX)
    with _open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size != int(header["index_size"]):
            raise IndexCorruptError(f"{path.name}: size does not match the snapshot")
        if hashlib.file_digest(handle, "sha256").hexdigest() != header.get("index_sha256"):
            raise IndexCorruptError(f"{path.name}: checksum mismatch")
    index = VectorIndex.open_mapped(path, spec, backend, last_seq=last_seq)
    place = slot.policy.vector_place
    name = header.get("vector_file")
    if place is None:
        return index
    try:
        _own_file(slot, name, VECTOR_FILE_SUFFIX)
        index.attach_exact(place.open(str(name), dim=spec.dim, last_seq=last_seq))
    except (VectorFileError, IndexCorruptError) as error:
        if isinstance(name, str) and "/" not in name:
            move_aside(slot.path.with_name(name), error.message)
        log.warning("exact vectors of %d / %s: %s", slot.collection_id, slot.model, error)
    return index


def read_index_file(slot: Slot, catalog: Catalog, backend: IndexBackend) -> VectorIndex | None:
    """The slot's snapshot, or None (no file, or one set aside as corrupt or not this slot's)."""
    try:
        kind = slot.path.stat().st_mode
    except FileNotFoundError:
        log.info(
            "no index file for collection %d / %s: building it", slot.collection_id, slot.model
        )
        return None
    except OSError as error:  # e.g. a dangling or looping link
        move_aside(slot.path, f"unreadable: {error.strerror}")
        return None
    if not stat.S_ISREG(kind):  # a folder, a FIFO (reading it would hang), a device...
        move_aside(slot.path, "not a regular file")
        return None
    try:
        header, payload = read_snapshot(slot.path)
        if header.get("collection_id") != slot.collection_id or header.get("model") != (slot.model):
            raise IndexCorruptError("the file belongs to another collection or model")
        last_seq = int(header["last_seq"])
        if last_seq > catalog.collection_seq(slot.collection_id):
            raise IndexCorruptError(
                "the file is ahead of the catalog (was the database restored or replaced?)"
            )
        spec = IndexSpec.from_dict(header["spec"])
        if "index_file" in header:
            index = _open_files(slot, header, spec, backend, last_seq)
        else:
            index = VectorIndex.deserialize(payload, spec, backend, last_seq=last_seq)
        if index.ntotal != int(header["count"]):
            raise IndexCorruptError("vector count does not match the header")
    except IndexCorruptError as error:
        move_aside(slot.path, error.message)
        return None
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        move_aside(slot.path, f"unreadable: {error}")
        return None
    except OSError as error:
        move_aside(slot.path, f"unreadable: {error.strerror or error}")
        return None
    slot.saved = (slot.generation + 1, last_seq)  # the generation the loader is about to assign
    slot.files = frozenset(
        str(header[key]) for key in ("index_file", "vector_file") if key in header
    )
    log.info(
        "loaded index for collection %d / %s at seq %d (%d vectors)",
        slot.collection_id,
        slot.model,
        last_seq,
        index.ntotal,
    )
    return index


def write_index_file(slot: Slot) -> bool:
    """Writes the current index to its file unless the file already holds exactly it."""
    with slot.save_lock:
        index, generation = slot.index, slot.generation
        if index is None or slot.dropped:
            return False
        fields: dict[str, Any] = {}
        if index.saves_files:
            if slot.saved == (generation, index.last_seq) or index.needs_exact:
                return False
            fields, spec, seq = index.save_files(slot.stem)
            payload = np.zeros(0, dtype=np.uint8)
        else:
            payload, spec, seq = index.serialize()
            if slot.saved == (generation, seq):
                return False
        header: dict[str, Any] = {
            "collection_id": slot.collection_id,
            "model": slot.model,
            "last_seq": seq,
            "count": index.ntotal,
            "spec": spec.to_dict(),
            "written_at": datetime.now(UTC).isoformat(),
            **fields,
        }
        size = write_snapshot(slot.path, header, payload)
        slot.saved = (generation, seq)
        named = frozenset(str(value) for key, value in fields.items() if key.endswith("_file"))
        for stale in slot.files - named:  # the files only the replaced snapshot named
            slot.path.with_name(stale).unlink(missing_ok=True)
        slot.files = named
    log.info(
        "saved index of collection %d / %s at seq %d (%d bytes)",
        slot.collection_id,
        slot.model,
        seq,
        size,
    )
    return True


def remove_unnamed_files(slot: Slot) -> None:
    """Deletes index and vector files of the slot that neither the snapshot on disk nor the
    loaded index uses (left by a crash between writing them and the snapshot's rename, or by a
    rebuild). Only at load: later, a retrain may be writing new ones."""
    keep = set(slot.files)
    index = slot.index
    exact = index.exact_file if index is not None else None
    if exact is not None:
        keep.add(exact.name)
    for path in side_files(slot.stem):
        if path.name in keep:
            continue
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:  # a folder cannot be unlinked; it stopped the load
            move_aside(path, "a folder where an index file belongs")
