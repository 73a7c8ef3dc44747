"""Shared resources on app state: loaded in the lifespan, read by handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from encoders.base import Encoder
from encoders.errors import ModelNotFoundError
from web.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    encoders: dict[str, Encoder] = field(default_factory=dict)
    ready: bool = False

    def encoder(self, name: str | None) -> Encoder:
        """The named model, or the first configured one when no name is given."""
        if name is None:
            return next(iter(self.encoders.values()))
        try:
            return self.encoders[name]
        except KeyError:
            loaded = ", ".join(self.encoders) or "none"
            raise ModelNotFoundError(
                f"model {name!r} is not loaded; loaded models: {loaded}", model=name
            ) from None
