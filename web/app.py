"""The app factory: routes, state, lifespan, limits, auth and error mapping wired in one place."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from contextlib import asynccontextmanager
from copy import copy
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig

from vizdex import __version__
from vizdex.encoders.base import Encoder
from vizdex.encoders.batched_encoder import BatchedEncoder, batched
from vizdex.encoders.loading import load_encoders
from vizdex.indexer import DuplicateJobs, PeriodicSweep, open_indexer
from vizdex.search import CollectionsService, SearchService
from vizdex.search.settings import SearchSettings
from vizdex.web.auth import api_key_guard
from vizdex.web.cancellation import disconnect_middleware
from vizdex.web.errors import EXCEPTION_HANDLERS
from vizdex.web.openapi import schema_router, security
from vizdex.web.routes import (
    collections,
    duplicates,
    health,
    images,
    jobs,
    multimodal,
    search,
    ui,
    uploads,
    vision,
)
from vizdex.web.routing import area
from vizdex.web.settings import LimitSettings, ServiceSettings
from vizdex.web.state import ServiceState

log = logging.getLogger(__name__)

VERSION = __version__  # the OpenAPI document's info.version
# How often a replica (PostgreSQL catalog) catches its indexes up with the change feed.
FOLLOW_INTERVAL_S = 1.0
# Sync handlers wait on their queued items in worker threads: enough of them for many clients.
WORKER_THREADS = 128

T = TypeVar("T")


def _open_search(settings: SearchSettings) -> SearchService:
    """The catalog and every index loaded (or rebuilt): until it is done the server is not
    ready. Its models are handed over later (``use_encoders``)."""
    service = SearchService.open(settings, {})
    try:
        service.warm_up()
    except BaseException:
        service.close()
        raise
    return service


def _beside(work: Callable[[], T], name: str) -> Future[T]:
    """``work`` on a daemon thread: a start that fails on one side reports it at once instead
    of waiting for the other, and a process exiting on it is not held back."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as error:
            done.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


def _load_models(
    settings: ServiceSettings, preloaded: Mapping[str, Encoder] | None
) -> dict[str, Encoder]:
    models = dict(preloaded) if preloaded is not None else load_encoders(settings.encoders)
    for model in models.values():
        model.warmup()  # readiness means a real batch has already run
    return models


def _close_abandoned(opened: Future[SearchService]) -> None:
    if opened.exception() is None:
        opened.result().close()


def _start(state: ServiceState, preloaded: Mapping[str, Encoder] | None) -> None:
    settings = state.settings
    # Index files load (memory-mapped, their ids and vector rows checked, the catalog's later
    # changes replayed) while the models load and warm up: a start waits for the slower of the
    # two, not for their sum.
    opening = _beside(partial(_open_search, settings.search), "vizdex-index-open")
    loading = _beside(partial(_load_models, settings, preloaded), "vizdex-model-load")
    # Whichever fails first fails the start at once: a catalog that cannot open does not wait
    # for minutes of model loading, nor a model that fails for an index rebuild.
    both: list[Future[Any]] = [opening, loading]
    wait(both, return_when=FIRST_EXCEPTION)
    failed = loading.exception() if loading.done() else None
    if failed is None:
        service = opening.result()  # its failure: the models, still loading, are abandoned
        failed = loading.exception()  # the slower side, once the indexes are open
        if failed is not None:
            service.close()
    else:
        opening.add_done_callback(_close_abandoned)  # closed whenever it finishes
    if failed is not None:
        raise failed
    models = loading.result()
    state.models = models
    state.encoders = batched(models, settings.batching, state.metrics.observer)
    service.use_encoders(state.encoders)
    state.search_service = service
    service.follow_other_writers(FOLLOW_INTERVAL_S)  # a replica: others write too
    # Ingestion batches on its own (encode_stream), so it gets the models, not the queues.
    state.indexer_service = open_indexer(service, models, settings.indexer, settings.images)
    state.duplicate_jobs_service = DuplicateJobs(service, state.indexer_service.store)
    state.indexer_service.resume_backfills()  # models left back-filling by a stop or a kill
    if settings.indexer.gc_interval_s > 0:  # files no row references, tombstones all include
        state.storage_sweep = PeriodicSweep(state.storage, settings.indexer.gc_interval_s)
        state.storage_sweep.start()
    state.metrics.queue_depths = lambda: {
        (name, kind): depth
        for name, encoder in state.encoders.items()
        if isinstance(encoder, BatchedEncoder)
        for kind, depth in encoder.queue_depths.items()
    }
    state.metrics.image_counts = CollectionsService(service).image_counts


def _close_queues(state: ServiceState) -> None:
    for encoder in state.encoders.values():
        if isinstance(encoder, BatchedEncoder):
            encoder.close()


def _stop(state: ServiceState) -> None:
    sweep, state.storage_sweep = state.storage_sweep, None
    if sweep is not None:
        sweep.stop()
    duplicate_jobs, state.duplicate_jobs_service = state.duplicate_jobs_service, None
    if duplicate_jobs is not None:
        duplicate_jobs.close()  # a running scan stops at its next batch, its job cancelled
    indexer, state.indexer_service = state.indexer_service, None
    if indexer is not None:
        indexer.close()  # running jobs stop after their batch; re-running resumes them
    service, state.search_service = state.search_service, None
    _close_queues(state)
    if service is not None:
        service.close()


def _copy_with(handler: HTTPRouteHandler, **attributes: Any) -> HTTPRouteHandler:
    """A copy of ``handler`` with this app's ``attributes`` (module-level handlers stay
    untouched, so each app's settings shape its own routes and schema)."""
    changed = copy(handler)
    for name, value in attributes.items():
        setattr(changed, name, value)
    return changed


def _api_areas(limits: LimitSettings) -> list[Router]:
    """Every /v1 route, one Router per area (it carries the area's tag); the routes that take
    image files get the upload body limit, the others keep the JSON one."""
    upload = partial(_copy_with, request_max_body_size=limits.upload_bytes)
    # Litestar refuses a form of over `multipart_form_part_limit` parts: one per file, a few more.
    files = min(limits.batch_items, limits.upload_files)
    batch = _copy_with(
        vision.vision_batch, operation_class=vision.batch_operation(limits.batch_items, files)
    )
    return [
        area("models", vision.list_models),
        area(
            "vision",
            upload(vision.vision_encode),
            vision.vision_similarity,
            upload(batch),
        ),
        area("multimodal", multimodal.multimodal_encode, multimodal.multimodal_match),
        area("search", search.multimodal_search, search.search_collection),
        area(
            "collections",
            collections.create_collection,
            collections.list_collections,
            collections.get_collection,
            collections.delete_collection,
            collections.patch_collection,
            collections.add_model,
            collections.remove_model,
        ),
        area(
            "images",
            images.list_images,
            images.get_image,
            images.patch_image,
            images.delete_image,
            images.image_file,
            images.image_thumbnail,
            upload(uploads.upload_images),
        ),
        area("duplicates", duplicates.find_duplicates, duplicates.duplicates_result),
        area("jobs", jobs.get_job, jobs.cancel_job),
    ]


def create_app(
    settings: ServiceSettings | None = None,
    *,
    encoders: Mapping[str, Encoder] | None = None,
) -> Litestar:
    """The vizdex HTTP app. ``encoders``: already loaded models (tests), else from settings."""
    settings = settings or ServiceSettings.from_env()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, WORKER_THREADS)
        await anyio.to_thread.run_sync(partial(_start, state, encoders))
        state.ready = True
        log.info("vizdex ready with models: %s", ", ".join(state.encoders))
        try:
            yield
        finally:
            state.ready = False
            await anyio.to_thread.run_sync(partial(_stop, state))

    limits = settings.limits
    components, required_keys = security(settings.auth.enabled)
    api = Router(
        "/v1",
        route_handlers=_api_areas(limits),
        guards=[api_key_guard],  # every /v1 route needs a key once keys are configured
        security=required_keys,
        request_max_body_size=limits.json_bytes,
    )
    cors = CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None
    return Litestar(
        route_handlers=[
            area(
                "health",
                health.live,
                health.ready,
                _copy_with(health.metrics, security=required_keys),
            ),
            api,
            *ui.UI_ROUTES,
        ],
        dependencies={"vizdex": Provide(lambda: state, sync_to_thread=False)},
        state=State({"vizdex": state}),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[state.metrics.middleware, disconnect_middleware],
        lifespan=[lifespan],
        # The entry point (`vizdex serve`) configures logging: an app factory that rewired the
        # process's root logger would bind its handler to whatever stderr was current (tests).
        logging_config=None,
        cors_config=cors,
        request_max_body_size=limits.json_bytes,
        multipart_form_part_limit=limits.upload_files + 16,
        openapi_config=OpenAPIConfig(
            title="vizdex",
            version=VERSION,
            path="/schema",
            openapi_router=schema_router("/schema"),
            description="Self-hosted image search: encode images and texts, search collections.",
            components=components,
        ),
    )
