"""Small readers for ``VIZDEX_*`` environment variables, shared by every package's settings."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vizdex.core.errors import InvalidInputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PREFIX = "VIZDEX_"
T = TypeVar("T")
S = TypeVar("S", bound="DataclassInstance")


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
        number = float(value)
    except ValueError:
        raise InvalidInputError(f"{PREFIX}{name} must be a number, got {value!r}") from None
    # inf would make a wait endless, nan compares false with every bound (and so passes them).
    if not math.isfinite(number):
        raise InvalidInputError(f"{PREFIX}{name} must be a finite number, got {value!r}")
    return number


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


DEFAULT_DATA_DIR = "./vizdex-data"


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``VIZDEX_DATA_DIR``, the one directory every embedded-profile file lives under."""
    return Path(env_str("DATA_DIR", DEFAULT_DATA_DIR, env))


def setting(
    name: str,
    default: T,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> T:
    """A settings field read from ``VIZDEX_<name>``: its default is written here, and only here.

    ``minimum`` bounds what the environment may say (below it is refused, naming the variable);
    ``choices`` limits a string to those values.
    """
    meta = {"env": name, "minimum": minimum, "choices": choices}
    return field(default=default, metadata=meta)


def read_settings(cls: type[S], env: Mapping[str, str] | None = None, **given: Any) -> S:
    """``cls`` built from the environment: each field declared with :func:`setting` is read from
    its variable (the field's default when unset); ``given`` values are passed as they are."""
    values: dict[str, Any] = dict(given)
    for item in fields(cls):
        if item.name in given or "env" not in item.metadata:
            continue
        values[item.name] = _read_field(item, env)
    return cls(**values)


def _read_field(item: Field[Any], env: Mapping[str, str] | None) -> Any:
    name, default = item.metadata["env"], item.default
    if default is MISSING:
        raise TypeError(f"setting {name} needs a default")
    minimum, choices = item.metadata["minimum"], item.metadata["choices"]
    value: Any
    if choices is not None:
        value = env_choice(name, default, choices, env)
    elif isinstance(default, bool):  # before int: bool is an int
        value = env_bool(name, default, env)
    elif isinstance(default, int):
        value = env_int(name, default, env)
    elif isinstance(default, float):
        value = env_float(name, default, env)
    elif isinstance(default, tuple):
        value = tuple(env_list(name, list(default), env))
    elif isinstance(default, Path):
        value = Path(env_str(name, str(default), env))
    else:
        value = env_str(name, default, env)
    if minimum is not None and value < minimum:
        # Refused, not raised to the minimum: -1 often means "never" to whoever wrote it, and
        # read as the minimum it would mean the opposite (prune every job, no grace period).
        raise InvalidInputError(f"{PREFIX}{name} must be at least {minimum:g}, got {value!r}")
    return value
