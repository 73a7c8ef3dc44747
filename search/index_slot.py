"""One vector index per (collection, model): its slot in memory and its snapshot file on disk.

A slot holds the loaded index with what is known about it (its generation, what the file on disk
holds); the file is a snapshot the catalog's changes are replayed onto at start-up.
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vizdex.search.catalog import Catalog
from vizdex.search.errors import IndexCorruptError
from vizdex.search.index import IndexBackend, IndexPolicy, IndexSpec, VectorIndex
from vizdex.search.index_file import move_aside, read_snapshot, write_snapshot

log = logging.getLogger(__name__)

FILE_SUFFIX = ".vdx"


def index_file_name(model: str) -> str:
    """A readable, collision-free file name for a model name such as ``org/model``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"
    return f"{slug}-{hashlib.sha1(model.encode()).hexdigest()[:8]}{FILE_SUFFIX}"


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
    dropped: bool = False

    @property
    def seq(self) -> int:
        return self.index.last_seq if self.index is not None else self.empty_seq


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
        }
        size = write_snapshot(slot.path, header, payload)
        slot.saved = (generation, seq)
    log.info(
        "saved index of collection %d / %s at seq %d (%d bytes)",
        slot.collection_id,
        slot.model,
        seq,
        size,
    )
    return True
