"""Helpers for API tests: settings on tiny models, an in-process client, a real loopback server.

``live_server`` runs uvicorn in a thread on a socket bound to 127.0.0.1 port 0, so tests never
collide on ports and never leave loopback.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.cli.serve import server_options
from vizdex.encoders.base import Encoder, WrappedEncoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.search.db import sqlite_file
from vizdex.web.app import create_app
from vizdex.web.settings import ServiceSettings
from vizdex.web.state import ServiceState


def api_settings(data_dir: Path, encoders: EncoderSettings, **overrides: Any) -> ServiceSettings:
    return replace(ServiceSettings.for_data_dir(data_dir, encoders=encoders), **overrides)


def photo_jpeg(seed: int, width: int = 96, height: int = 72) -> bytes:
    return jpeg_bytes(make_photo(width, height, seed=seed))


def photo_b64(seed: int, width: int = 96, height: int = 72) -> str:
    return base64.b64encode(photo_jpeg(seed, width, height)).decode("ascii")


def upload_photos(client: TestClient[Litestar], collection: str, seeds: list[int]) -> list[int]:
    """Uploads one synthetic photo per seed in one JSON request; returns their image ids."""
    items = [{"data": photo_b64(seed), "name": f"p{seed}.jpg"} for seed in seeds]
    answer = client.post(f"/v1/collections/{collection}/images", json={"images": items})
    assert answer.status_code in (200, 201), answer.text
    return [int(result["id"]) for result in answer.json()["results"]]


def state_of(app: Litestar) -> ServiceState:
    state: ServiceState = app.state["vizdex"]
    return state


@contextmanager
def api_client(
    settings: ServiceSettings, models: Mapping[str, Encoder] | None, **headers: str
) -> Iterator[TestClient[Litestar]]:
    """An in-process client; the app's lifespan (warm-up, catalog) runs around the block.

    ``models`` None: the app loads ``settings.encoders`` itself, as the service does.
    """
    app = create_app(settings, encoders=models)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(headers)
        yield client


class LiveServer:
    def __init__(self, app: Litestar, server: uvicorn.Server, port: int) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def state(self) -> ServiceState:
        return state_of(self.app)


@contextmanager
def live_server(settings: ServiceSettings, models: Mapping[str, Encoder]) -> Iterator[LiveServer]:
    """uvicorn serving the app in a thread, on a free loopback port; stopped afterwards."""
    app = create_app(settings, encoders=models)
    # Protocol given: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose `proto` says
    # TCP, and without it every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # `vizdex serve`'s own options (limit_concurrency: VIZDEX_MAX_CONNECTIONS), quieter and
    # quicker to stop; host and port come from the socket bound above.
    options = {**server_options(settings), "log_level": "warning", "timeout_graceful_shutdown": 5}
    config = uvicorn.Config(app, lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield LiveServer(app, server, port)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def database_unreachable(state: ServiceState) -> Iterator[None]:
    """The catalog's SQLite file cannot be opened: a directory stands where it was.

    As when its volume is gone. The pool is emptied first: SQLite answers ``SELECT 1`` on an open
    connection without reading the file, so only a new connection meets the missing database.
    Everything is put back afterwards.
    """
    engine = state.search.catalog.engine
    path = sqlite_file(engine.url)
    assert path is not None, "this helper needs a SQLite catalog"
    engine.dispose()
    moved: list[tuple[Path, Path]] = []
    for suffix in ("", "-wal", "-shm"):
        current = path.with_name(path.name + suffix)
        if current.exists():
            aside = current.with_name(current.name + ".aside")
            current.rename(aside)
            moved.append((aside, current))
    path.mkdir()
    try:
        yield
    finally:
        engine.dispose()
        path.rmdir()
        for aside, current in moved:
            aside.rename(current)


def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GatedEncoder(WrappedEncoder):
    """Wraps an encoder; every model call waits for ``gate`` (to hold a queue full on purpose)."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.rows_encoded = 0
        self.calls: list[int] = []  # rows per model call, in order

    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> np.ndarray:
        self.entered.set()
        self.gate.wait(30)
        self.rows_encoded += len(pixels)
        self.calls.append(len(pixels))
        return self.inner.encode_pixels(pixels, normalize=normalize)

    def warmup(self) -> None:
        pass  # the gate would hold start-up
