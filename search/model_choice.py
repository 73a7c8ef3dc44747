"""Which model answers a query: one rule for the service, the CLI and the web app (torch-free).

Text needs a multimodal (CLIP-like) model: the first one. Images prefer a vision-only model (DINOv3
is the better image matcher) and fall back to the first model. A model whose kind is unknown (not
loaded here) that may change the answer is a ``ModelNotLoadedError``, never silently passed over.
Anything else takes the first.
A model asked for by name is used as given, once it is known to be able to do the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from vizdex.core.errors import CapabilityError
from vizdex.core.kinds import ModelKind
from vizdex.search.errors import InvalidQueryError, ModelNotLoadedError, ModelNotReadyError
from vizdex.search.records import CollectionRecord, ModelState

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
    if use is ModelUse.IMAGE and models:
        # Every model the rule could pick: a model of unknown kind (not loaded here) may be the
        # vision model it prefers. More than one possible answer: picking one would be a silent
        # fallback to a worse matcher.
        possible: list[str] = []
        for name in models:
            kind = kind_of(name)
            if kind is None or kind is ModelKind.VISION:
                possible.append(name)
            if kind is ModelKind.VISION:
                break
        else:
            possible.append(models[0])
        if len(set(possible)) > 1:
            hidden = next(name for name in possible if kind_of(name) is None)
            raise ModelNotLoadedError(
                f"{owner} answers image queries with {hidden!r} if it is a vision model, "
                f"which is not loaded here; load it (VIZDEX_MODELS) or name a loaded model",
                model=hidden,
            )
        return possible[0]
    if not models:
        raise CapabilityError(f"{owner} has no model; load one (VIZDEX_MODELS)")
    return models[0]


def collection_model(
    collection: CollectionRecord, kind_of: KindOf, use: ModelUse, *, requested: str | None = None
) -> str:
    """The collection's model that answers a ``use`` query: the one asked for (which must be one
    of its models, and ready), else its stored default for text or images, else the rule above
    over its *ready* models (a model still back-filling never answers: its index is half full).
    """
    owner = f"collection {collection.name!r}"
    if requested is not None:
        if requested not in collection.models:
            raise InvalidQueryError(
                f"{owner} is not embedded with model {requested!r}; its models are "
                f"{list(collection.models)}",
                model=requested,
            )
        if collection.state_of(requested) is not ModelState.READY:
            raise ModelNotReadyError(
                f"model {requested!r} is still back-filling {owner}; until it covers every "
                "image, query another model",
                model=requested,
            )
        return choose_model(collection.models, kind_of, use, requested=requested, owner=owner)
    stored = {ModelUse.TEXT: collection.text_model, ModelUse.IMAGE: collection.image_model}
    default = stored.get(use)
    if default is not None and collection.state_of(default) is ModelState.READY:
        return default
    return choose_model(collection.ready_models, kind_of, use, owner=owner)


def default_models(models: Sequence[str], kind_of: KindOf) -> tuple[str | None, str | None]:
    """(text, image) defaults a new collection stores: what the rule picks today, so that a model
    added later answers only once someone makes it the default."""
    try:
        text = choose_model(models, kind_of, ModelUse.TEXT)
    except CapabilityError:
        text = None
    try:
        image = choose_model(models, kind_of, ModelUse.IMAGE)
    except (CapabilityError, ModelNotLoadedError):
        image = None
    return text, image


def answering_models(collection: CollectionRecord, kind_of: KindOf) -> dict[str, str | None]:
    """Per query kind ("text", "image"), the model that answers it now: the stored default or,
    with none stored, the rule's pick; None where no model can, or the answer is not known here
    (a model whose kind this process cannot tell)."""
    answering: dict[str, str | None] = {}
    for use in (ModelUse.TEXT, ModelUse.IMAGE):
        try:
            answering[use.value] = collection_model(collection, kind_of, use)
        except (CapabilityError, ModelNotLoadedError, ModelNotReadyError, InvalidQueryError):
            answering[use.value] = None
    return answering
