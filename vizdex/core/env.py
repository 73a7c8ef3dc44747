"""Small readers for ``VIZDEX_*`` environment variables, shared by every package's settings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from vizdex.core.errors import InvalidInputError

PREFIX = "VIZDEX_"


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    source = os.environ if env is None else env
    value = source.get(PREFIX + name)
    return None if value is None or value.strip() == "" else value.strip()


def env_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    return default if value is None else value


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        return int(value.replace("_", ""))
    except ValueError:
        raise InvalidInputError(f"{PREFIX}{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"{PREFIX}{name} must be a number, got {value!r}") from None


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise InvalidInputError(f"{PREFIX}{name} must be true or false, got {value!r}")


def env_list(name: str, default: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, env)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(
    name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None
) -> str:
    value = env_str(name, default, env).lower()
    if value not in choices:
        raise InvalidInputError(
            f"{PREFIX}{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value
