"""Shared resources on app state: loaded in the lifespan, read by handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.di import NamedDependency

from vizdex.core.errors import ModelNotFoundError, UnavailableError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder
from vizdex.encoders.streaming import draft_side
from vizdex.indexer import (
    DataStore,
    DuplicateJobs,
    ImageFiles,
    Indexer,
    JobsService,
    ModelChanges,
    PeriodicSweep,
    StorageCollector,
)
from vizdex.search import CollectionsService, ModelUse, SearchService, choose_model
from vizdex.web.auth import KeyRing
from vizdex.web.metrics import Metrics
from vizdex.web.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    metrics: Metrics = field(default_factory=Metrics)
    # What requests use: the models behind their micro-batching queues (or the models themselves
    # when batching is off). ``models`` are the loaded models, for ingestion's own batching.
    encoders: dict[str, Encoder] = field(default_factory=dict)
    models: dict[str, Encoder] = field(default_factory=dict)
    search_service: SearchService | None = None
    indexer_service: Indexer | None = None
    duplicate_jobs_service: DuplicateJobs | None = None
    storage_sweep: PeriodicSweep | None = None
    ready: bool = False
    keys: KeyRing = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyRing(self.settings.auth)

    @property
    def search(self) -> SearchService:
        if self.search_service is None:
            raise UnavailableError("the service is starting; retry shortly", code="starting")
        return self.search_service

    @property
    def indexer(self) -> Indexer:
        if self.indexer_service is None:
            raise UnavailableError("the service is starting; retry shortly", code="starting")
        return self.indexer_service

    @property
    def duplicate_jobs(self) -> DuplicateJobs:
        if self.duplicate_jobs_service is None:
            raise UnavailableError("the service is starting; retry shortly", code="starting")
        return self.duplicate_jobs_service

    @property
    def store(self) -> DataStore:
        return self.indexer.store

    # The services routes call besides ``search`` and ``indexer``: views over those two, cheap to
    # make per request (they hold no state of their own).
    @property
    def collections(self) -> CollectionsService:
        return CollectionsService(self.search)

    @property
    def jobs(self) -> JobsService:
        return JobsService(self.search, self.indexer_service, self.duplicate_jobs_service)

    @property
    def storage(self) -> StorageCollector:
        """Deletes that take their files along (after the commit), and the sweep."""
        indexer = self.settings.indexer
        return StorageCollector(
            self.search,
            self.store,
            grace_s=indexer.gc_grace_s,
            job_retention_s=indexer.job_retention_s,
        )

    @property
    def model_changes(self) -> ModelChanges:
        """Models added (back-filled), made default or removed while the collection serves."""
        return ModelChanges(self.search, self.indexer)

    @property
    def files(self) -> ImageFiles:
        return ImageFiles(self.search, self.store, self.settings.indexer, self.settings.images)

    @property
    def min_side(self) -> int | None:
        """How far JPEGs may be draft-decoded so that every loaded model still gets enough."""
        return draft_side(list(self.encoders.values())) if self.encoders else None

    def encoder(self, name: str | None, *, use: ModelUse = ModelUse.ANY) -> Encoder:
        """The named model, or the one ``choose_model`` picks for ``use`` (ANY: the first)."""
        if not self.encoders:
            raise UnavailableError("the service is starting; retry shortly", code="starting")
        if name is not None and name not in self.encoders:
            loaded = ", ".join(self.encoders) or "none"
            raise ModelNotFoundError(
                f"model {name!r} is not loaded; loaded models: {loaded}", model=name
            )
        return self.encoders[choose_model(list(self.encoders), self._kind_of, use, requested=name)]

    def _kind_of(self, name: str) -> ModelKind | None:
        encoder = self.encoders.get(name)
        return encoder.kind if encoder is not None else None


# How handlers ask for the state: ``vizdex: Vizdex`` (injected by name, see ``web.app``).
Vizdex = NamedDependency[ServiceState]
