"""Prometheus metrics: one registry per app (no process globals), rendered at ``/metrics``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

QueueDepths = Callable[[], Mapping[tuple[str, str], int]]
ImageCounts = Callable[[], Mapping[str, int]]


class _LiveGauges:
    """Values read when scraped: queue depth per queue, images per collection."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "vizdex_queue_depth",
            "Items waiting in a micro-batching queue",
            labels=["model", "input"],
        )
        for (model, kind), value in self._metrics.queue_depths().items():
            depth.add_metric([model, kind], value)
        yield depth
        images = GaugeMetricFamily(
            "vizdex_images_indexed", "Images in the catalog, per collection", labels=["collection"]
        )
        try:
            counts = self._metrics.image_counts()
        except Exception:  # a scrape must not fail because the database is briefly unavailable
            log.warning("could not count images for /metrics", exc_info=True)
            counts = {}
        for collection, count in counts.items():
            images.add_metric([collection], count)
        yield images


class _QueueObserver:
    def __init__(self, metrics: Metrics, model: str, kind: str) -> None:
        self._size = metrics.batch_size.labels(model, kind)
        self._seconds = metrics.batch_seconds.labels(model, kind)
        self._rejected = metrics.queue_rejected.labels(model, kind)
        self._skipped = metrics.items_skipped.labels(model, kind)

    def batch_done(self, size: int, seconds: float) -> None:
        self._size.observe(size)
        self._seconds.observe(seconds)

    def rejected(self, count: int) -> None:
        self._rejected.inc(count)

    def skipped(self, count: int) -> None:
        self._skipped.inc(count)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.request_seconds = Histogram(
            "vizdex_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "vizdex_errors",
            "Error responses by status and reason code",
            ["status", "code"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "vizdex_batch_size",
            "Items per micro-batched model call",
            ["model", "input"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "vizdex_batch_duration_seconds",
            "Time of one micro-batched model call",
            ["model", "input"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_rejected = Counter(
            "vizdex_queue_rejected_items",
            "Items refused because their queue was full (answered 429)",
            ["model", "input"],
            registry=registry,
        )
        self.items_skipped = Counter(
            "vizdex_queue_skipped_items",
            "Queued items dropped because their client disconnected",
            ["model", "input"],
            registry=registry,
        )
        self.images_added = Counter(
            "vizdex_images_added",
            "Images added through the API, per collection",
            ["collection"],
            registry=registry,
        )
        self.queue_depths: QueueDepths = dict
        self.image_counts: ImageCounts = dict
        registry.register(_LiveGauges(self))

    def observer(self, model: str, kind: str) -> _QueueObserver:
        return _QueueObserver(self, model, kind)

    def error(self, status: int, code: str) -> None:
        self.errors.labels(str(status), code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware timing each routed request under its path template (low cardinality)."""

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            status = 500
            started = time.perf_counter()

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.request_seconds.labels(str(scope.get("method")), route, str(status)).observe(
                    time.perf_counter() - started
                )

        return timed
