"""Settings read from ``VIZDEX_*``: one default per field, shared by the constructor and the env."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from vizdex.core.env import read_settings, setting
from vizdex.core.errors import InvalidInputError
from vizdex.encoders.settings import BatchSettings, EncoderSettings
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer.settings import IndexerSettings
from vizdex.search.settings import CatalogSettings, IndexSettings, QuerySettings
from vizdex.web.settings import AuthSettings, LimitSettings, ServiceSettings

NO_ARGUMENTS = (
    EncoderSettings,
    BatchSettings,
    ImageInputSettings,
    QuerySettings,
    LimitSettings,
    AuthSettings,
)


@pytest.mark.parametrize("cls", NO_ARGUMENTS, ids=lambda cls: cls.__name__)
def test_an_empty_environment_gives_the_constructor_defaults(cls: Any) -> None:
    assert cls.from_env({}) == cls()


def test_derived_paths_follow_the_data_directory() -> None:
    env = {"VIZDEX_DATA_DIR": "/srv/v"}
    assert IndexerSettings.from_env(env) == IndexerSettings(data_dir=Path("/srv/v"))
    assert CatalogSettings.from_env(env) == CatalogSettings("sqlite:////srv/v/catalog.db")
    assert IndexSettings.from_env(env) == IndexSettings(directory=Path("/srv/v/indexes"))
    assert ServiceSettings.from_env(env).data_dir == Path("/srv/v")


def test_indexer_shares_the_encoders_batch_defaults() -> None:
    assert IndexerSettings(Path("d")).batch_size == EncoderSettings().batch_size
    env = {"VIZDEX_BATCH_SIZE": "7", "VIZDEX_DECODE_WORKERS": "3"}
    indexer, encoders = IndexerSettings.from_env(env), EncoderSettings.from_env(env)
    assert (indexer.batch_size, indexer.workers) == (encoders.batch_size, 3) == (7, 3)


@dataclass(frozen=True)
class Example:
    count: int = setting("COUNT", 5, minimum=1)
    ratio: float = setting("RATIO", 0.5)
    flag: bool = setting("FLAG", False)
    names: tuple[str, ...] = setting("NAMES", ("a",))
    mode: str = setting("MODE", "x", choices=("x", "y"))
    where: Path = setting("WHERE", Path("/tmp"))
    plain: int = 9  # not read from the environment


def test_each_type_is_parsed_from_its_variable() -> None:
    env = {
        "VIZDEX_COUNT": "1_000",
        "VIZDEX_RATIO": "0.25",
        "VIZDEX_FLAG": "yes",
        "VIZDEX_NAMES": " b, c ,,",
        "VIZDEX_MODE": "Y",
        "VIZDEX_WHERE": "/srv",
        "VIZDEX_PLAIN": "1",
    }
    read = read_settings(Example, env)
    assert read == Example(1000, 0.25, True, ("b", "c"), "y", Path("/srv"), 9)


def test_blank_variables_keep_the_default_and_minimums_refuse() -> None:
    """Below the minimum is refused, not clamped: VIZDEX_JOB_RETENTION_S=-1 ("keep forever" to
    many) was read as 0 and pruned every finished job."""
    assert read_settings(Example, {"VIZDEX_COUNT": "  ", "VIZDEX_MODE": ""}) == Example()
    assert read_settings(Example, {"VIZDEX_COUNT": "1"}).count == 1
    for below in ("0", "-4"):
        with pytest.raises(
            InvalidInputError, match=f"VIZDEX_COUNT must be at least 1, got {below}"
        ):
            read_settings(Example, {"VIZDEX_COUNT": below})


def test_given_values_win_over_the_environment() -> None:
    assert read_settings(Example, {"VIZDEX_COUNT": "3"}, count=8).count == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COUNT", "many"),
        ("RATIO", "half"),
        ("RATIO", "inf"),  # a wait or a bound set to inf never ends
        ("RATIO", "-Infinity"),
        ("RATIO", "nan"),  # nan passes every comparison with a minimum
        ("FLAG", "maybe"),
        ("MODE", "z"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidInputError, match=f"VIZDEX_{name}"):
        read_settings(Example, {f"VIZDEX_{name}": value})


def test_every_field_read_from_the_environment_has_a_default() -> None:
    for cls in (*NO_ARGUMENTS, IndexerSettings, CatalogSettings, IndexSettings, ServiceSettings):
        for item in fields(cls):
            if "env" in item.metadata:
                assert item.default is not item.default_factory, (cls, item.name)
