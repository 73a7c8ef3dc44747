"""Rescans: what can be skipped without reading a byte, and what ``--prune`` removes.

A file is unchanged when the catalog has an image at its path with the same size and mtime; that
costs one ``stat`` and a share of one query per few hundred paths. Everything else goes on to be
hashed, and the hash decides between new, touched, moved and duplicate (see ``indexer.writer``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from vizdex.indexer.sources import PathItem
from vizdex.search import Catalog, CollectionRecord, IndexStore, SourceKind, images_at_sources

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 256  # paths per catalog query while planning
PRUNE_PAGE = 1000  # images per page while looking for vanished files


def plan_paths(catalog: Catalog, collection_id: int, paths: Iterable[str]) -> Iterator[PathItem]:
    """Stat each path and attach what the catalog knows about it, a chunk at a time."""
    source = iter(paths)
    while chunk := list(islice(source, LOOKUP_CHUNK)):
        known = images_at_sources(catalog, collection_id, chunk)
        for path in chunk:
            try:
                info = os.stat(path)
            except OSError:
                yield PathItem(path)  # the loader reports why it cannot be read
                continue
            rows = known.get(path, [])
            match = next(
                (r for r in rows if (r.size, r.mtime_ns) == (info.st_size, info.st_mtime_ns)),
                None,
            )
            yield PathItem(
                path,
                size=info.st_size,
                mtime_ns=info.st_mtime_ns,
                known_id=match.image_id if match is not None else None,
                other_rows=len(rows) > (1 if match is not None else 0),
            )


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _gone(path: str) -> bool:
    """Only a definite "no such file" counts: an unreadable or unmounted folder is not proof."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def prune(
    catalog: Catalog,
    indexes: IndexStore | None,
    collection: CollectionRecord,
    roots: Sequence[str],
) -> int:
    """Delete the collection's images whose files under ``roots`` no longer exist.

    Pages through the collection by id, so memory stays bounded; each page is one transaction.
    """
    if not roots:
        return 0
    removed = 0
    after = 0
    while page := catalog.list_images(collection.id, after_id=after, limit=PRUNE_PAGE):
        after = page[-1].id
        gone = [
            image.id
            for image in page
            if image.source_kind is SourceKind.PATH
            and image.source_uri
            and _under(image.source_uri, roots)
            and _gone(image.source_uri)
        ]
        if gone:
            removed += len(catalog.delete_images(collection.id, gone))
            if indexes is not None:
                indexes.sync(collection)
    if removed:
        log.info("pruned %d images whose files are gone", removed)
    return removed
