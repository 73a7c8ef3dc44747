"""The service's settings: each package's own, composed here from ``VIZDEX_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from encoders.env import env_int, env_str
from encoders.image_settings import ImageInputSettings
from encoders.settings import EncoderSettings


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"  # VIZDEX_HOST
    port: int = 8000  # VIZDEX_PORT
    encoders: EncoderSettings = field(default_factory=EncoderSettings)
    images: ImageInputSettings = field(default_factory=ImageInputSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceSettings:
        return cls(
            host=env_str("HOST", "127.0.0.1", env),
            port=env_int("PORT", 8000, env),
            encoders=EncoderSettings.from_env(env),
            images=ImageInputSettings.from_env(env),
        )
