"""The ingestion pipeline: discover → plan → read, hash, dedupe, decode → encode → write → index.

``encoders.streaming.encode_stream`` is the decode/encode stage: its threads read, hash, decode
and preprocess ahead of the model in a bounded window, and carry already-indexed items through
without decoding them. The caller's thread runs the models; a writer thread commits each batch
(rows and vectors in one transaction) and updates the indexes while the next batch is encoded.
Discovery and planning are generators pulled by that window, so memory does not grow with the
number of files.

Resumability comes from the catalog, not from a journal: a batch is either committed or not, and
a re-run skips what is committed (same path, size and mtime) and redoes the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from functools import partial
from types import TracebackType

from vizdex.core.errors import (
    ConflictError,
    ImageRejectedError,
    InvalidInputError,
    StorageFullError,
    VizdexError,
    storage_error,
)
from vizdex.core.precision import Precision
from vizdex.core.stage_clock import StageClock
from vizdex.encoders.base import Encoder
from vizdex.encoders.device_jpeg import warm_up_decoder
from vizdex.encoders.streaming import (
    EncodedBatch,
    default_workers,
    device_decode_possible,
    encode_stream,
)
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer.backfill import Backfill, BackfillOptions, BackfillProgress
from vizdex.indexer.dedupe import ShaFilter
from vizdex.indexer.discovery import Inputs, count, discover, resolve_inputs
from vizdex.indexer.incremental import plan_paths, prune
from vizdex.indexer.jobs import (
    JobLease,
    JobLocks,
    JobTracker,
    close_job,
    open_job,
    reap_interrupted,
)
from vizdex.indexer.loading import ItemLoader
from vizdex.indexer.progress import ProgressCallback
from vizdex.indexer.queue import (
    CHUNK_SIZE,
    ChunkTracker,
    QueueWorker,
    WorkerOptions,
    enqueue_request,
    request_for,
)
from vizdex.indexer.ray_embed import connect
from vizdex.indexer.ray_ingest import RayIngestStream, ray_work
from vizdex.indexer.report import IngestReport
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.sources import IngestRequest, Item, Payload, UploadItem, UrlItem
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnail_sink import ThumbnailSink
from vizdex.indexer.writer import BatchWriter
from vizdex.search import (
    Catalog,
    ClaimedItem,
    CollectionNotFoundError,
    CollectionRecord,
    IndexStore,
    JobNotFoundError,
    JobRecord,
    JobState,
    ModelNotLoadedError,
    ModelState,
    images_at_sources,
    iter_sha256,
)

log = logging.getLogger(__name__)

RETRY_PASSES = 1  # items whose known image vanished mid-run get this many more tries
KEEP_FINISHED = 100  # reports of finished background jobs kept for ``wait``
BACKFILL = "backfill"  # a queued chunk's payload key: the model to back-fill
# Items to the encoded batches the writer commits: the local stream or the Ray cluster's.
Encode = Callable[[Iterable[Item]], Generator[EncodedBatch[Item, Payload], None, None]]


class _WriterThread:
    """Runs a ``BatchWriter`` on its own thread behind a short queue (back-pressure)."""

    def __init__(self, writer: BatchWriter, cancel: threading.Event, depth: int = 2) -> None:
        self._writer = writer
        self._cancel = cancel
        self._queue: queue.Queue[EncodedBatch[Item, Payload] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="vizdex-writer", daemon=True)

    def __enter__(self) -> _WriterThread:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None or self._cancel.is_set():
                continue  # drain: the producer stops at its next put
            try:
                self._writer.write(batch)
            except BaseException as error:
                self._error = error

    def put(self, batch: EncodedBatch[Item, Payload]) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Batches already encoded are still committed when the producer failed (a cancelled job
        # drops them instead: stopping soon is the point, and a re-run redoes them).
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error


def _precisions(collection: CollectionRecord, encoders: Sequence[Encoder]) -> dict[str, Precision]:
    """The collection's model names -> the precision each one's encoder computes in."""
    return {
        model: encoder.precision for model, encoder in zip(collection.models, encoders, strict=True)
    }


class Indexer:
    """Runs ingestion jobs against one catalog and its indexes.

    ``ingest`` runs a job in the calling thread; ``submit`` queues it on one background thread and
    returns the job at once (the web API's upload path). Submitted jobs run one after another;
    an ``ingest`` call never waits for them: jobs running side by side share the models batch by
    batch (each model runs one forward at a time) and the catalog keeps them consistent.
    """

    def __init__(
        self,
        catalog: Catalog,
        indexes: IndexStore | None,
        encoders: Mapping[str, Encoder],
        settings: IndexerSettings,
        images: ImageInputSettings | None = None,
        *,
        job_flush_s: float = 0.5,
        queue: bool = False,
    ) -> None:
        self._catalog = catalog
        # Queue mode (the distributed profile): ``submit`` puts jobs in the catalog's work queue,
        # where any worker (this server's included) runs them: they outlive this process.
        self._queue = queue
        self._queue_thread: threading.Thread | None = None
        self._indexes = indexes
        self._encoders = dict(encoders)
        self._settings = settings
        self._images = images or ImageInputSettings()
        self._job_flush_s = job_flush_s
        self.store = DataStore(settings.data_dir)
        self.store.prepare()
        self._locks = JobLocks(self.store.locks_dir)
        self._executor: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future[IngestReport]] = {}
        self._cancels: dict[int, threading.Event] = {}
        self._state_lock = threading.Lock()
        self._closing = threading.Event()
        self._reaper: threading.Thread | None = None
        self._backfills: dict[tuple[int, str], threading.Thread] = {}
        self._backfill_jobs: dict[tuple[int, str], int] = {}
        models = list(self._encoders.values())
        # Sets nvJPEG up now rather than in the first job, and says so if it cannot run.
        wanted = settings.device_decode and models and device_decode_possible(models)
        if wanted and not warm_up_decoder(models[0].device):
            log.warning(
                "JPEG decoding on %s does not work (torchvision without nvJPEG?): every JPEG "
                "will be decoded on the CPU; set VIZDEX_DEVICE_DECODE=false to skip trying",
                models[0].device,
            )

    # -- public --------------------------------------------------------------------------------

    def ingest(
        self,
        collection: str,
        request: IngestRequest,
        *,
        progress: ProgressCallback | None = None,
        ray_address: str | None = None,
    ) -> IngestReport:
        """Run one job to its end in this thread; the report says what happened.

        ``ray_address``: decode and encode on that Ray cluster (``indexer.ray_ingest``; folders
        and files only), checked before the job exists."""
        if ray_address is not None:
            if request.uploads or request.urls:
                raise InvalidInputError(
                    "an ingest on Ray takes folders and files; send uploads and URLs without it"
                )
            connect(ray_address)  # refuse before a job when Ray is missing or unreachable
        job, lease, reaped = self._open(collection, request)
        return self._run(job, lease, request, progress, reaped, ray=ray_address is not None)

    def submit(
        self,
        collection: str,
        request: IngestRequest,
        *,
        progress: ProgressCallback | None = None,
    ) -> JobRecord:
        """Create the job (``pending``) and run it on the background thread; returns at once.

        In queue mode the job goes to the work queue instead (``progress`` is not reported).
        """
        if self._queue:
            self._encoders_for(self._catalog.get_collection(collection))  # refuse before a job
            return self.enqueue(collection, request)
        job, lease, reaped = self._open(collection, request)
        try:
            with self._state_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="vizdex-ingest")
                future = self._executor.submit(self._run, job, lease, request, progress, reaped)
                self._futures[job.id] = future
                self._forget_old_futures()
        except BaseException:
            with self._state_lock:
                self._cancels.pop(job.id, None)
            close_job(self._catalog, self._locks, lease, JobState.CANCELLED)
            raise
        return job

    def enqueue(
        self, collection: str, request: IngestRequest, *, chunk_size: int = CHUNK_SIZE
    ) -> JobRecord:
        """Put the job in the catalog's work queue, in chunks, for any worker to run.

        Uploaded bytes are written to the data directory first (every worker must see it: a
        shared filesystem in the distributed profile); folders are listed now, so each chunk is
        a fixed list of files. Returns the pending job at once.
        """
        record = self._catalog.get_collection(collection)
        if request.prune:
            raise InvalidInputError(
                "--prune needs one process to see the whole folder: run it without --enqueue"
            )
        inputs = resolve_inputs(request.paths, request.files_from)
        if request.urls and not self._images.allow_urls:
            raise ImageRejectedError(
                "ingesting from URLs is not enabled on this server (VIZDEX_ALLOW_URLS)",
                code="forbidden_url",
            )
        settings = self._settings
        files = list(discover(inputs, settings.extensions, include_hidden=settings.include_hidden))
        return enqueue_request(
            self._catalog, self.store, record, request, files, chunk_size=chunk_size
        )

    def run_chunk(
        self,
        claimed: ClaimedItem,
        owner: str,
        cancel: threading.Event,
    ) -> IngestReport:
        """Run one claimed chunk of a queued job in this thread (a queue worker's work).

        The chunk's counts go to the chunk and its job together; if another worker has taken the
        chunk over meanwhile, ``cancel`` is set and the chunk stops at its next batch.
        """
        if BACKFILL in claimed.payload:
            return self._backfill_chunk(claimed, owner, cancel)
        collection = self._catalog.get_collection_by_id(claimed.collection_id)
        request = request_for(claimed, self.store)
        report = IngestReport(job_id=claimed.job_id, collection=collection.name)
        tracker = ChunkTracker(self._catalog, claimed, owner, cancel, interval_s=self._job_flush_s)
        if request is None:
            return report
        # Before decoding anything: this worker's precision may not suit the collection (the
        # replica that queued the job may run another VIZDEX_DTYPE); the chunk fails saying so.
        self._catalog.check_precisions(
            collection.id, _precisions(collection, self._encoders_for(collection))
        )
        # A chunk's paths are the files listed when the job was queued, not folders to resolve:
        # one deleted since fails alone (``not_found``) instead of failing its whole chunk.
        listed = Inputs(folders=(), files=request.paths)
        try:
            self._execute(collection, request, report, tracker, cancel, lambda: None, listed)
        finally:
            tracker.flush()
        return report

    def _forget_old_futures(self) -> None:
        """A long-running server submits jobs forever: keep only the latest finished reports."""
        finished = [job_id for job_id, future in self._futures.items() if future.done()]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._futures[job_id]

    def wait(self, job_id: int, timeout: float | None = None) -> IngestReport:
        """The report of a job started with ``submit`` (re-raises what made it fail)."""
        with self._state_lock:
            future = self._futures.get(job_id)
        if future is None:
            raise JobNotFoundError(f"job {job_id} was not submitted to this indexer")
        return future.result(timeout=timeout)

    def cancel(self, job_id: int) -> bool:
        """Ask a job of this indexer to stop after its current batch; False if it is not ours."""
        with self._state_lock:
            event = self._cancels.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    def reap_interrupted(self, job_ids: Sequence[int] | None = None) -> list[int]:
        """Fail unfinished jobs whose process died (any process sharing this data directory)."""
        return reap_interrupted(self._catalog, self._locks, job_ids=job_ids)

    def start_reaper(self, interval_s: float = 30.0) -> None:
        """Reap now, then every ``interval_s`` until ``close``: a server must not show the jobs
        of a killed process (itself before a restart, or a CLI run) as running for ever. Stale
        temporary files such a process left (older than an hour) go on the same rounds."""
        self.reap_interrupted()
        self.store.sweep_temporaries()
        if self._reaper is not None:
            return

        def loop() -> None:
            while not self._closing.wait(interval_s):
                try:
                    self.reap_interrupted()
                    self.store.sweep_temporaries()
                except Exception:  # e.g. the database briefly unreachable: try again later
                    log.exception("reaping interrupted jobs failed")

        self._reaper = threading.Thread(target=loop, name="vizdex-job-reaper", daemon=True)
        self._reaper.start()

    def start_queue_worker(self, options: WorkerOptions | None = None) -> QueueWorker:
        """Work the catalog's queue on a thread of this process until ``close``."""
        worker = QueueWorker(self._catalog, self.run_chunk, self.store, options)
        thread = threading.Thread(
            target=worker.run, args=(self._closing,), name="vizdex-queue-worker", daemon=True
        )
        self._queue_thread = thread
        thread.start()
        return worker

    def close(self) -> None:
        """Cancel queued and running jobs and wait for them to stop."""
        self._closing.set()
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.join()
        queue_thread, self._queue_thread = self._queue_thread, None
        if queue_thread is not None:  # its chunk is handed back for another worker
            queue_thread.join()
        with self._state_lock:
            events = list(self._cancels.values())
            executor, self._executor = self._executor, None
        for event in events:
            event.set()
        if executor is not None:
            executor.shutdown(wait=True)
        with self._state_lock:
            backfills = list(self._backfills.values())
        for thread in backfills:  # each stops after its batch; the catalog keeps what it wrote
            thread.join()

    # -- model back-fills (indexer.backfill) ----------------------------------------------------

    def backfill(
        self,
        collection: str,
        model: str,
        *,
        background: bool = True,
        progress: BackfillProgress | None = None,
        ray_address: str | None = None,
    ) -> JobRecord:
        """Embeds the collection's images that lack a ``model`` vector (a job of kind
        ``backfill``): on a thread of its own (``background``), or in the calling thread.
        A back-fill of the same model already running here is returned instead of a second.
        In queue mode (PostgreSQL) a background back-fill goes to the work queue instead, as
        one chunk any worker may claim; one already queued or running is returned."""
        record = self._catalog.get_collection(collection)
        encoder = self._encoders.get(model)
        if encoder is None:
            raise ModelNotLoadedError(
                f"model {model!r} is not loaded here, so it cannot back-fill {collection!r}; "
                f"loaded: {sorted(self._encoders)}",
                model=model,
            )
        if ray_address is not None:
            connect(ray_address)  # refuse before a job when Ray is missing or unreachable
        elif self._queue and background:
            # Through the work queue: a worker with the model runs it, and should that worker
            # (or the replica that accepted it) die, a survivor finishes it from the catalog.
            return self._catalog.enqueue_job(
                record.id,
                kind="backfill",
                source=model,
                total=self._catalog.count_lacking(record.id, model),
                chunks=[{BACKFILL: model}],
                unique=True,
            )
        with self._state_lock:
            running = self._backfills.get((record.id, model))
            if running is not None and running.is_alive():
                job_id = self._backfill_jobs[(record.id, model)]
                return self._catalog.get_job(job_id)
        job, lease, _ = open_job(
            self._catalog, self._locks, record.id, kind="backfill", source=model
        )
        cancel = threading.Event()
        with self._state_lock:
            self._cancels[job.id] = cancel
        runner = self._backfill_runner(encoder, ray_address)

        def work() -> None:
            state, error = JobState.FAILED, None
            try:
                if self._catalog.start_job(job.id).state is JobState.CANCELLED:
                    cancel.set()  # cancelled before it began: nothing is embedded
                tracker = JobTracker(self._catalog, job.id, interval_s=self._job_flush_s)
                outcome = runner.run(record.id, model, tracker, cancel, progress)
                state = JobState.CANCELLED if cancel.is_set() else JobState.DONE
                if not outcome.ready and state is JobState.DONE:
                    error = (
                        f"{outcome.failed} images could not be read: {model!r} stays "
                        "back-filling until they are deleted or re-uploaded"
                    )
            except (CollectionNotFoundError, JobNotFoundError) as gone:
                # The collection was deleted under it (its jobs with it): nothing left to do.
                log.info("back-fill of %s in collection %s stopped: %s", model, collection, gone)
                state = JobState.CANCELLED
            except Exception as failure:  # recorded on the job; the server goes on
                log.exception("back-fill of %s in collection %s failed", model, collection)
                error = str(failure)
            finally:
                _close_unless_gone(self._catalog, self._locks, lease, state, error)
                with self._state_lock:
                    self._cancels.pop(job.id, None)

        if not background:
            work()
            return self._catalog.get_job(job.id)
        thread = threading.Thread(target=work, name=f"vizdex-backfill-{job.id}", daemon=True)
        with self._state_lock:
            self._backfills[(record.id, model)] = thread
            self._backfill_jobs[(record.id, model)] = job.id
        thread.start()
        return job

    def _backfill_runner(self, encoder: Encoder, ray_address: str | None) -> Backfill:
        return Backfill(
            catalog=self._catalog,
            indexes=self._indexes,
            store=self.store,
            encoder=encoder,
            images=self._images,
            options=BackfillOptions.of(self._settings, ray_address),
        )

    def _backfill_chunk(
        self, claimed: ClaimedItem, owner: str, cancel: threading.Event
    ) -> IngestReport:
        """A queued back-fill (one chunk: its work list is the catalog), run by a worker."""
        model = str(claimed.payload[BACKFILL])
        collection = self._catalog.get_collection_by_id(claimed.collection_id)
        encoder = self._encoders.get(model)
        if encoder is None:  # the chunk fails saying so: every worker needs the models
            raise ModelNotLoadedError(
                f"model {model!r} is not loaded by this worker, so it cannot back-fill "
                f"{collection.name!r}; loaded: {sorted(self._encoders)}",
                model=model,
            )
        tracker = ChunkTracker(self._catalog, claimed, owner, cancel, interval_s=self._job_flush_s)
        # What an earlier owner committed before it stopped is no longer lacking: skipped, as a
        # resumed ingestion chunk counts the files it finds already in.
        queued = self._catalog.get_job(claimed.job_id).total
        tracker.add(skipped=max(0, queued - self._catalog.count_lacking(collection.id, model)))
        try:
            outcome = self._backfill_runner(encoder, None).run(
                collection.id, model, tracker, cancel
            )
        finally:
            tracker.flush()
        report = IngestReport(job_id=claimed.job_id, collection=collection.name)
        report.indexed, report.failed = outcome.done, outcome.failed
        return report

    def resume_backfills(self) -> list[JobRecord]:
        """Starts the back-fill of every back-filling model this process has loaded (after a
        restart or a kill: the work left is what the catalog still lacks)."""
        started = []
        for record in self._catalog.list_collections():
            for model, state in record.model_states.items():
                if state is ModelState.BACKFILLING and model in self._encoders:
                    try:
                        started.append(self.backfill(record.name, model))
                    except ConflictError:  # another process sharing the catalog runs it
                        continue
        return started

    # -- job lifecycle -------------------------------------------------------------------------

    def _open(
        self, collection: str, request: IngestRequest
    ) -> tuple[JobRecord, JobLease, list[int]]:
        record = self._catalog.get_collection(collection)
        # Refuse before a job exists: a model not loaded, or vectors the collection cannot mix.
        self._catalog.check_precisions(record.id, _precisions(record, self._encoders_for(record)))
        resolve_inputs(request.paths, request.files_from)
        if request.urls and not self._images.allow_urls:
            # The same refusal (403 forbidden_url) as the encode and search routes give.
            raise ImageRejectedError(
                "ingesting from URLs is not enabled on this server (VIZDEX_ALLOW_URLS)",
                code="forbidden_url",
            )
        self.store.keep_reserve()  # room to record the job's end should it fill the disk
        job, lease, reaped = open_job(
            self._catalog,
            self._locks,
            record.id,
            kind=request.kind,
            source=request.describe(),
        )
        with self._state_lock:
            self._cancels[job.id] = threading.Event()
        return job, lease, reaped

    def _encoders_for(self, collection: CollectionRecord) -> list[Encoder]:
        missing = [model for model in collection.models if model not in self._encoders]
        if missing:
            raise ModelNotLoadedError(
                f"collection {collection.name!r} is embedded with {missing}, which "
                f"{'is' if len(missing) == 1 else 'are'} not loaded; loaded: "
                f"{sorted(self._encoders)}",
                models=missing,
            )
        return [self._encoders[model] for model in collection.models]

    def _run(
        self,
        job: JobRecord,
        lease: JobLease,
        request: IngestRequest,
        progress: ProgressCallback | None,
        reaped: Sequence[int],
        *,
        ray: bool = False,
    ) -> IngestReport:
        with self._state_lock:
            cancel = self._cancels.setdefault(job.id, threading.Event())
        report = IngestReport(job_id=job.id, collection="")
        tracker = JobTracker(self._catalog, job.id, interval_s=self._job_flush_s, cancel=cancel)
        state, error, disk_full = JobState.FAILED, None, False
        started = time.monotonic()

        def on_batch() -> None:
            report.elapsed_s = time.monotonic() - started
            if progress is not None:
                progress(report.snapshot())

        try:  # from here on, whatever happens, the job is finished before this returns
            collection = self._catalog.get_collection_by_id(job.collection_id)
            report.collection = collection.name
            if self._catalog.start_job(job.id).state is JobState.CANCELLED:
                cancel.set()  # cancelled while it waited for its turn
            if not cancel.is_set():
                if reaped:
                    log.info("job %d resumes interrupted jobs %s", job.id, list(reaped))
                self._execute(collection, request, report, tracker, cancel, on_batch, ray=ray)
            state = JobState.CANCELLED if cancel.is_set() else JobState.DONE
        except KeyboardInterrupt:
            state, error = JobState.CANCELLED, "interrupted by the user"
            raise
        except VizdexError as failure:
            error, disk_full = failure.message, isinstance(failure, StorageFullError)
            raise
        except Exception as failure:
            storage = storage_error(failure, self._settings.data_dir)
            if storage is not None:  # said once, as the reason: a traceback would add nothing
                log.error("job %d stopped: %s", job.id, storage.message)
                error, disk_full = storage.message, isinstance(storage, StorageFullError)
                raise storage from failure
            log.exception("job %d failed", job.id)
            error = f"{type(failure).__name__}: {failure}"
            raise
        finally:
            report.elapsed_s = time.monotonic() - started
            report.state, report.error = state, error
            report.uploads.sort(key=lambda outcome: outcome.index)
            # The disk is full: the reserve makes room to record that, then is taken back.
            released = disk_full and self.store.release_reserve()
            try:
                tracker.flush()
                _close_unless_gone(self._catalog, self._locks, lease, state, error)
            except Exception:  # never hide the exception that got us here
                log.exception("could not record the end of job %d", job.id)
            finally:
                lease.release()
                with self._state_lock:
                    self._cancels.pop(job.id, None)
                if released:
                    self.store.keep_reserve()
        return report

    # -- the work ------------------------------------------------------------------------------

    def _execute(
        self,
        collection: CollectionRecord,
        request: IngestRequest,
        report: IngestReport,
        tracker: JobTracker,
        cancel: threading.Event,
        on_batch: Callable[[], None],
        inputs: Inputs | None = None,
        *,
        ray: bool = False,
    ) -> None:
        encoders = self._encoders_for(collection)
        if inputs is None:
            inputs = resolve_inputs(request.paths, request.files_from)
        settings = self._settings
        report.total = (
            len(request.uploads)
            + len(request.urls)
            + count(inputs, settings.extensions, include_hidden=settings.include_hidden)
        )
        tracker.set_total(report.total)  # a chunk's tracker leaves the job's total alone
        on_batch()
        self.store.sweep_temporaries()
        known = ShaFilter.of(
            iter_sha256(self._catalog, collection.id),
            expected=self._catalog.count_images(collection.id) + 1000,
        )
        loader = ItemLoader(
            catalog=self._catalog,
            collection_id=collection.id,
            store=self.store,
            settings=settings,
            images=self._images,
            known=known,
            device_decode=settings.device_decode and device_decode_possible(encoders),
        )
        thumbnails = ThumbnailSink(
            self.store,
            longest=settings.thumbnail_size,
            quality=settings.thumbnail_quality,
            workers=default_workers(settings.workers),
        )
        clock = StageClock()
        writer = BatchWriter(
            catalog=self._catalog,
            indexes=self._indexes,
            collection=collection,
            model_keys=[encoder.name for encoder in encoders],
            report=report,
            tracker=tracker,
            on_batch=on_batch,
            thumbnails=thumbnails,
            clock=clock,
            precisions=_precisions(collection, encoders),
        )
        encode: Encode = partial(self._local_stream, encoders, loader, clock)
        if ray:
            encode = RayIngestStream(
                catalog=self._catalog,
                collection_id=collection.id,
                store=self.store,
                work=ray_work(collection.models, encoders, settings, self._images),
                encoders=encoders,
            )
        with closing(thumbnails):
            items = self._items(collection, request, inputs)
            self._stream(encode(items), writer, cancel)
            for _ in range(RETRY_PASSES):
                if not writer.retry or cancel.is_set():
                    break
                again, writer.retry = writer.retry, []
                log.info("retrying %d items whose catalog entry changed meanwhile", len(again))
                self._stream(encode(iter(again)), writer, cancel)
        if writer.retry and not cancel.is_set():
            writer.fail(
                writer.retry,
                "conflict",
                "the image was changed in the catalog by someone else while it was being "
                "ingested; run the ingestion again",
            )
        if request.prune and inputs.folders and not cancel.is_set():
            report.pruned = prune(self._catalog, self._indexes, collection, inputs.folders)
        if self._indexes is not None:  # a queue worker keeps no index: replicas follow the feed
            with clock.stage("index snapshot"):
                self._indexes.snapshot(collection)
        # Main thread: waiting, device decode, model forward; writer thread: the others.
        log.info(
            "job %d stage seconds: %s",
            report.job_id,
            clock.summary(),
            extra={"stage_seconds": clock.seconds()},
        )

    def _items(
        self, collection: CollectionRecord, request: IngestRequest, inputs: Inputs
    ) -> Iterator[Item]:
        uploads, urls = request.numbered()
        for index, upload in uploads:
            yield UploadItem(index, upload)
        if urls:
            known = images_at_sources(self._catalog, collection.id, request.urls)
            for index, url in urls:
                rows = known.get(url)
                yield UrlItem(url, known_id=rows[-1].image_id if rows else None, index=index)
        settings = self._settings
        files = discover(inputs, settings.extensions, include_hidden=settings.include_hidden)
        yield from plan_paths(self._catalog, collection.id, files)

    def _local_stream(
        self,
        encoders: Sequence[Encoder],
        loader: ItemLoader,
        clock: StageClock,
        items: Iterable[Item],
    ) -> Generator[EncodedBatch[Item, Payload], None, None]:
        settings = self._settings
        return encode_stream(
            items,
            encoders,
            loader,
            batch_size=settings.batch_size,
            workers=settings.workers,
            preview_side=settings.thumbnail_size,
            clock=clock,
        )

    @staticmethod
    def _stream(
        batches: Generator[EncodedBatch[Item, Payload], None, None],
        writer: BatchWriter,
        cancel: threading.Event,
    ) -> None:
        with _WriterThread(writer, cancel) as sink, closing(batches):
            for batch in batches:
                sink.put(batch)
                if cancel.is_set():
                    break


def _close_unless_gone(
    catalog: Catalog, locks: JobLocks, lease: JobLease, state: JobState, error: str | None
) -> None:
    """``close_job``, except that a job deleted with its collection meanwhile (an upload or a
    back-fill racing DELETE /v1/collections) has no end to record: said in one line."""
    try:
        close_job(catalog, locks, lease, state, error=error)
    except (CollectionNotFoundError, JobNotFoundError) as gone:  # close_job released the lease
        log.info("job %d ended with its collection: %s", lease.job_id, gone)
