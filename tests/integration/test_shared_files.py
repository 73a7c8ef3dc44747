"""A server that cannot see a file of the data directory the catalog records.

On a shared catalog (PostgreSQL: replicas and workers on several machines) an upload's original
and its thumbnail were written into the data directory by whichever server or worker took the
image; a server that cannot read them is not sharing that directory, and says so
(``file_not_shared``, 503) rather than failing with a 500. One server alone on SQLite has simply
lost the file (``file_missing``, 404). Runs on both databases; the files are really removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import UnitVectors
from tests.support.postgres import DATABASES, database_url_for
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import DataStore, FileNotSharedError, ImageFiles, IndexerSettings
from vizdex.search import ImageNotFoundError, NewImage, SearchService, SearchSettings, SourceKind

DIM = 8


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


@pytest.fixture
def search(search_settings: SearchSettings) -> Iterator[SearchService]:
    service = SearchService.open(search_settings, {})
    yield service
    service.close()


def test_a_data_directory_file_this_server_cannot_see(
    search: SearchService, data_dir: Path, unit_vectors: UnitVectors
) -> None:
    data = jpeg_bytes(make_photo(320, 240, seed=3))
    sha = hashlib.sha256(data).hexdigest()
    store = DataStore(data_dir)
    original = store.put_original(sha, "JPEG", data)
    search.catalog.create_collection("photos", ["clip"])
    image = NewImage(
        sha256=sha,
        width=320,
        height=240,
        format="JPEG",
        byte_size=len(data),
        vectors={"clip": unit_vectors(1, DIM)[0]},
        source_kind=SourceKind.UPLOAD,
        original_name="beach.jpg",
    )
    (added,) = search.add_images("photos", [image])
    files = ImageFiles(search, store, IndexerSettings(data_dir=data_dir), ImageInputSettings())
    assert files.original("photos", added.id).path == store.resolve(original)
    thumbnail = files.thumbnail("photos", added.id)
    assert thumbnail.is_file()

    # What a replica whose data directory is not the shared one sees: neither file is there.
    thumbnail.unlink()
    store.resolve(original).unlink()
    shared = search.catalog.engine.dialect.name == "postgresql"
    for read, what in ((files.original, "file"), (files.thumbnail, "thumbnail")):
        if shared:
            with pytest.raises(FileNotSharedError) as not_shared:
                read("photos", added.id)
            assert not_shared.value.code == "file_not_shared"
            assert not_shared.value.details == {"image_id": added.id}
            message = not_shared.value.message
            assert f"the {what} of image {added.id}" in message
            assert "same data directory" in message and "shared filesystem" in message
        else:
            with pytest.raises(ImageNotFoundError) as missing:
                read("photos", added.id)
            assert missing.value.code == "file_missing"
