"""Made ``release-0004.db``: a catalog written by vizdex at revision 0004 (the last to store
float32 vectors), which ``test_migrations`` upgrades. Run with that release's code, not this
one's:

    cd <checkout at 0004> && python -P tests/support/catalogs/make_release_catalog.py OUT.db
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.records import NewImage
from vizdex.search.schema import head_revision
from vizdex.search.settings import CatalogSettings


def main(out: Path) -> None:
    out.unlink(missing_ok=True)
    assert head_revision() == "0004", head_revision()
    catalog = Catalog.open(CatalogSettings(database_url=f"sqlite:///{out}"))
    rng = np.random.default_rng(2026)

    def unit(count: int, dim: int) -> np.ndarray:
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def image(key: str, vectors: dict[str, np.ndarray]) -> NewImage:
        sha = hashlib.sha256(key.encode()).hexdigest()
        return NewImage(
            sha256=sha, vectors=vectors, width=64, height=48, format="png", byte_size=1234
        )

    photos = catalog.create_collection("photos", ["clip", "dino"])
    clip, dino = unit(40, 16), unit(40, 24)
    items = [image(f"p{i}", {"clip": clip[i], "dino": dino[i]}) for i in range(40)]
    ids = [stored.id for stored in catalog.add_images(photos.id, items)]
    catalog.delete_images(photos.id, ids[:5])
    catalog.put_embeddings(photos.id, "clip", ids[5:8], unit(3, 16))
    raw = catalog.create_collection("raw", ["custom"])
    big = (rng.standard_normal((6, 8)) * 3).astype(np.float32)  # a caller's: not unit length
    catalog.add_images(raw.id, [image(f"r{i}", {"custom": big[i]}) for i in range(6)])
    catalog.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
