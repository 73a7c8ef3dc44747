"""Catalog access by source path, for incremental ingestion.

Incremental scans look up hundreds of paths per query, and moved or touched files need their
path, size and mtime updated in place. These touch only columns that no vector index holds, so
they take no sequence number. Kept beside ``Catalog`` (not in it) to keep that module small.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vizdex.search.catalog import Catalog
from vizdex.search.models import Image, utcnow

CHUNK = 500  # paths per IN list: well under any backend's parameter limit


@dataclass(frozen=True)
class SourceRow:
    image_id: int
    sha256: str
    size: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class SourceUpdate:
    image_id: int
    source_uri: str
    original_name: str
    size: int | None
    mtime_ns: int | None


def images_at_sources(
    catalog: Catalog, collection_id: int, uris: Sequence[str]
) -> dict[str, list[SourceRow]]:
    """Images recorded at each of ``uris`` (usually one each), in id order."""
    found: dict[str, list[SourceRow]] = {}
    wanted = sorted(set(uris))
    with Session(catalog.engine) as session, session.begin():
        for start in range(0, len(wanted), CHUNK):
            rows = session.execute(
                select(
                    Image.source_uri,
                    Image.id,
                    Image.sha256,
                    Image.source_size,
                    Image.source_mtime_ns,
                )
                .where(
                    Image.collection_id == collection_id,
                    Image.source_uri.in_(wanted[start : start + CHUNK]),
                )
                .order_by(Image.id)
            )
            for uri, image_id, sha, size, mtime in rows:
                found.setdefault(str(uri), []).append(SourceRow(image_id, sha, size, mtime))
    return found


def iter_sha256(catalog: Catalog, collection_id: int, *, page: int = 20_000) -> Iterator[str]:
    """Every sha256 in the collection, paged by id (short reads, bounded memory)."""
    last = 0
    while True:
        with Session(catalog.engine) as session, session.begin():
            rows = session.execute(
                select(Image.id, Image.sha256)
                .where(Image.collection_id == collection_id, Image.id > last)
                .order_by(Image.id)
                .limit(page)
            ).all()
        if not rows:
            return
        last = int(rows[-1][0])
        for _, sha in rows:
            yield str(sha)


def update_sources(catalog: Catalog, collection_id: int, updates: Sequence[SourceUpdate]) -> int:
    """Record new paths (moves) or new size/mtime (touched files), in one transaction.

    Returns the number of rows changed.
    """
    if not updates:
        return 0
    changed = 0
    now = utcnow()
    with Session(catalog.engine) as session, session.begin():
        for change in updates:
            result = session.execute(
                update(Image)
                .where(Image.collection_id == collection_id, Image.id == change.image_id)
                .values(
                    source_uri=change.source_uri,
                    original_name=change.original_name,
                    source_size=change.size,
                    source_mtime_ns=change.mtime_ns,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            changed += int(getattr(result, "rowcount", 0) or 0)
    return changed
