"""Model discovery: which encoder a hub id or local directory needs, before any weights load.

Reads only ``config.json`` (from the directory, or the standard Hugging Face cache / hub, honouring
``HF_HUB_OFFLINE``) and maps its ``model_type`` to a model family.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vizdex.core.errors import ModelNotFoundError, UnsupportedModelError
from vizdex.core.kinds import ModelKind


class ModelFamily(StrEnum):
    CLIP = "clip"
    DINO = "dino"


# model_type in config.json -> (family, kind). Everything else is refused.
SUPPORTED_MODEL_TYPES: dict[str, tuple[ModelFamily, ModelKind]] = {
    "clip": (ModelFamily.CLIP, ModelKind.MULTIMODAL),
    "dinov3_vit": (ModelFamily.DINO, ModelKind.VISION),
    "dinov3_convnext": (ModelFamily.DINO, ModelKind.VISION),
    "dinov2": (ModelFamily.DINO, ModelKind.VISION),
}


@dataclass(frozen=True)
class ModelSpec:
    """What discovery learned about a model: where it is and which encoder to build."""

    model_id: str
    source: str  # a local directory, or the hub id itself
    model_type: str
    family: ModelFamily
    kind: ModelKind
    config: dict[str, Any]

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.source)


def _how_to_fix(model_id: str) -> str:
    return (
        f"Download it where the hub is reachable (e.g. `hf download {model_id} "
        "--local-dir /models/NAME`), copy the directory here and set VIZDEX_MODELS=/models/NAME "
        "(or pass --model /models/NAME); a pre-filled Hugging Face cache (HF_HOME) also works."
    )


def _read_local_config(directory: Path, model_id: str) -> dict[str, Any]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(
            f"model directory {str(directory)!r} has no config.json; point vizdex at a directory "
            "made with save_pretrained (it holds config.json and the weights)",
            model=model_id,
        )
    try:
        loaded = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelNotFoundError(
            f"cannot read {str(config_file)!r}: {error}", model=model_id
        ) from error
    if not isinstance(loaded, dict):
        raise ModelNotFoundError(f"{str(config_file)!r} is not a JSON object", model=model_id)
    return loaded


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check, so an unreachable hub fails in seconds instead of a long retry loop."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download_config(model_id: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        # The cache first: works offline and costs no network round trip.
        path = hf_hub_download(repo_id=model_id, filename="config.json", local_files_only=True)
        return _read_local_config(Path(path).parent, model_id)
    except Exception:
        if offline:
            raise ModelNotFoundError(
                f"model {model_id!r} could not be found: HF_HUB_OFFLINE is set and it is not in "
                f"the local Hugging Face cache. {_how_to_fix(model_id)}",
                model=model_id,
            ) from None
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"model {model_id!r} could not be found: it is not a local directory, not in the "
            f"Hugging Face cache, and the hub is unreachable. {_how_to_fix(model_id)}",
            model=model_id,
        )
    try:
        path = hf_hub_download(repo_id=model_id, filename="config.json")
    except GatedRepoError as error:
        raise ModelNotFoundError(
            f"model {model_id!r} is gated on the Hugging Face hub: accept its licence on the hub "
            f"and set HF_TOKEN, or use a local copy. {_how_to_fix(model_id)}",
            model=model_id,
        ) from error
    except Exception as error:  # unknown repo, network, bad id: one clear message
        raise ModelNotFoundError(
            f"model {model_id!r} could not be found on the Hugging Face hub "
            f"({type(error).__name__}: {error}). {_how_to_fix(model_id)}",
            model=model_id,
        ) from error
    return _read_local_config(Path(path).parent, model_id)


def model_spelling(given: str, known: Iterable[str]) -> str:
    """The name ``given`` is recorded under beside the ``known`` ones.

    A local directory is one model however it is spelled (relative, with a trailing slash,
    through a link): the known spelling is kept, and a new directory is recorded as its absolute
    path, which means the same to every process. A hub id is kept as given.
    """
    known = list(known)
    if given in known:
        return given
    candidate = Path(given).expanduser()
    if not (candidate.is_absolute() or given.startswith((".", "~")) or candidate.is_dir()):
        return given
    for name in known:
        other = Path(name).expanduser()
        try:
            if other.is_dir() and candidate.is_dir() and os.path.samefile(candidate, other):
                return name
        except OSError:
            continue
    return os.path.abspath(str(candidate))


def discover_model(model_id: str) -> ModelSpec:
    """Resolve ``model_id`` (local directory or hub id) to a spec, without loading weights."""
    candidate = Path(model_id).expanduser()
    looks_like_path = candidate.is_absolute() or model_id.startswith((".", "~"))
    if candidate.is_dir():
        config = _read_local_config(candidate, model_id)
        source = str(candidate.resolve())
    elif looks_like_path or model_id.count("/") > 1:
        raise ModelNotFoundError(
            f"model directory {model_id!r} does not exist; give a directory saved with "
            "save_pretrained (config.json, weights, preprocessor_config.json) or a hub id",
            model=model_id,
        )
    else:
        config = _download_config(model_id)
        source = model_id
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(sorted(SUPPORTED_MODEL_TYPES))
        raise UnsupportedModelError(
            f"model {model_id!r} has model_type {model_type or '(missing)'!r}, which vizdex "
            f"cannot use; supported model types: {supported}",
            model=model_id,
        )
    family, kind = SUPPORTED_MODEL_TYPES[model_type]
    return ModelSpec(model_id, source, model_type, family, kind, config)
