"""Ingestion: folders, files, uploads and URLs into the catalog and indexes, resumably.

``Indexer`` runs jobs (``ingest`` in the calling thread, ``submit`` in the background);
``IngestRequest`` says what to ingest; ``IngestReport`` says what happened. ``enqueue`` puts a job
in the catalog's work queue instead, in chunks that ``QueueWorker``s (``vizdex worker``) claim.
``DataStore`` knows where thumbnails and uploaded originals live; a server serves them through
``ImageFiles`` and shows jobs through ``JobsService`` / ``job_out`` (``indexer.serving``,
``indexer.job_view``).
"""

from vizdex.indexer.discovery import Inputs, discover, resolve_inputs, walk_folder
from vizdex.indexer.duplicate_jobs import DuplicateJobs, JobFailedError, JobNotFinishedError
from vizdex.indexer.job_view import JobFailureOut, JobOut, job_json, job_out
from vizdex.indexer.jobs import INTERRUPTED, JobFinishedError, JobLocks, reap_interrupted
from vizdex.indexer.pipeline import Indexer
from vizdex.indexer.progress import ProgressCallback, ProgressSnapshot, TextProgress, render
from vizdex.indexer.queue import QueueWorker, WorkerOptions, cancel_job
from vizdex.indexer.report import IngestReport, UploadOutcome
from vizdex.indexer.serving import (
    FileNotSharedError,
    ImageFiles,
    JobsService,
    StoredFile,
    open_indexer,
)
from vizdex.indexer.settings import DEFAULT_EXTENSIONS, IndexerSettings
from vizdex.indexer.sources import IngestRequest, Upload
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnails import make_thumbnail

__all__ = [
    "DEFAULT_EXTENSIONS",
    "INTERRUPTED",
    "DataStore",
    "DuplicateJobs",
    "FileNotSharedError",
    "ImageFiles",
    "Indexer",
    "IndexerSettings",
    "IngestReport",
    "IngestRequest",
    "Inputs",
    "JobFailedError",
    "JobFailureOut",
    "JobFinishedError",
    "JobLocks",
    "JobNotFinishedError",
    "JobOut",
    "JobsService",
    "ProgressCallback",
    "ProgressSnapshot",
    "QueueWorker",
    "StoredFile",
    "TextProgress",
    "Upload",
    "UploadOutcome",
    "WorkerOptions",
    "cancel_job",
    "discover",
    "job_json",
    "job_out",
    "make_thumbnail",
    "open_indexer",
    "reap_interrupted",
    "render",
    "resolve_inputs",
    "walk_folder",
]
