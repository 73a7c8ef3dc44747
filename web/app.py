"""The app factory: routes, state, lifespan and error mapping wired in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from encoders.base import Encoder
from encoders.loading import load_encoders
from web.errors import EXCEPTION_HANDLERS
from web.routes import health, vision
from web.settings import ServiceSettings
from web.state import ServiceState

log = logging.getLogger(__name__)


def _load_and_warm(settings: ServiceSettings) -> dict[str, Encoder]:
    encoders = load_encoders(settings.encoders)
    for encoder in encoders.values():
        encoder.warmup()  # readiness means a real batch has already run
    return encoders


def create_app(settings: ServiceSettings | None = None) -> Litestar:
    state = ServiceState(settings or ServiceSettings.from_env())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state.encoders = await anyio.to_thread.run_sync(_load_and_warm, state.settings)
        state.ready = True
        log.info("vizdex ready with models: %s", ", ".join(state.encoders))
        try:
            yield
        finally:
            state.ready = False

    return Litestar(
        route_handlers=[health.live, health.ready, vision.list_models, vision.vision_encode],
        dependencies={"vizdex": Provide(lambda: state, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="vizdex", version="0.1.0", path="/schema"),
    )
