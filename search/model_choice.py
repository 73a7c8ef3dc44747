"""Which model answers a query: one rule for the service, the CLI and the web app (torch-free).

Text needs a multimodal (CLIP-like) model: the first one. Images prefer a vision-only model (DINOv3
is the better image matcher) and fall back to the first model. Anything else takes the first.
A model asked for by name is used as given, once it is known to be able to do the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from vizdex.core.errors import CapabilityError
from vizdex.core.kinds import ModelKind

# What a candidate can embed; None where that is not known here (e.g. the model is not loaded).
KindOf = Callable[[str], ModelKind | None]


class ModelUse(StrEnum):
    TEXT = "text"  # a text query, or text to encode
    IMAGE = "image"  # an image query (or a stored image's vector), images to compare
    ANY = "any"  # no preference (encoding images with whatever comes first)


def choose_model(
    models: Sequence[str],
    kind_of: KindOf,
    use: ModelUse,
    *,
    requested: str | None = None,
    owner: str = "this vizdex",
) -> str:
    """The model among ``models`` (in preference order) that answers a ``use`` query.

    ``requested`` is the caller's explicit choice; checking that it is one of ``models`` (and
    loaded) is the caller's part, since what "unknown" means differs (not in the collection, not
    loaded). ``owner`` names where ``models`` come from, for the error message.
    """
    if requested is not None:
        if use is ModelUse.TEXT and kind_of(requested) is ModelKind.VISION:
            raise CapabilityError(
                f"model {requested!r} is vision-only and cannot encode text", model=requested
            )
        return requested
    if use is ModelUse.TEXT:
        unknown: list[str] = []
        for name in models:  # lazily: asking a kind may mean reading a model's config
            kind = kind_of(name)
            if kind is ModelKind.MULTIMODAL:
                return name
            if kind is None:
                unknown.append(name)
        raise CapabilityError(
            f"{owner} has no model that understands text (its models: {list(models)}"
            + (f"; not loaded here: {unknown}" if unknown else "")
            + "); add a multimodal model such as CLIP"
        )
    if use is ModelUse.IMAGE:
        for name in models:
            if kind_of(name) is ModelKind.VISION:
                return name
    if not models:
        raise CapabilityError(f"{owner} has no model; load one (VIZDEX_MODELS)")
    return models[0]
