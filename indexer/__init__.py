"""Ingestion: folders, files, uploads and URLs into the catalog and indexes, resumably.

``Indexer`` runs jobs (``ingest`` in the calling thread, ``submit`` in the background);
``IngestRequest`` says what to ingest; ``IngestReport`` says what happened. ``DataStore`` knows
where thumbnails and uploaded originals live, for whoever serves them.
"""

from vizdex.indexer.discovery import Inputs, discover, resolve_inputs, walk_folder
from vizdex.indexer.jobs import INTERRUPTED, JobLocks, reap_interrupted
from vizdex.indexer.pipeline import Indexer
from vizdex.indexer.progress import ProgressCallback, ProgressSnapshot, TextProgress, render
from vizdex.indexer.report import IngestReport, UploadOutcome
from vizdex.indexer.settings import DEFAULT_EXTENSIONS, IndexerSettings
from vizdex.indexer.sources import IngestRequest, Upload
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnails import make_thumbnail

__all__ = [
    "DEFAULT_EXTENSIONS",
    "INTERRUPTED",
    "DataStore",
    "Indexer",
    "IndexerSettings",
    "IngestReport",
    "IngestRequest",
    "Inputs",
    "JobLocks",
    "ProgressCallback",
    "ProgressSnapshot",
    "TextProgress",
    "Upload",
    "UploadOutcome",
    "discover",
    "make_thumbnail",
    "reap_interrupted",
    "render",
    "resolve_inputs",
    "walk_folder",
]
