"""The one domain-error hierarchy of vizdex.

Every package raises these; the web layer maps the *classes* to HTTP statuses in one place and the
indexer records ``code`` per failed file. Messages are written for the person who sent the input.
"""

from __future__ import annotations

from typing import Any


class VizdexError(Exception):
    """Base of every error vizdex raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInputError(VizdexError):
    """The request itself is wrong (bad value, wrong shape); resending it unchanged will fail."""

    code = "invalid_input"


class NotFoundError(VizdexError):
    """A named thing (model, collection, image, job) does not exist."""

    code = "not_found"


class ConflictError(VizdexError):
    """The request clashes with existing state (duplicate name, schema out of date)."""

    code = "conflict"


class UnavailableError(VizdexError):
    """The service cannot do this right now (overloaded, out of memory); retrying may work."""

    code = "unavailable"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class UnsupportedModelError(InvalidInputError):
    code = "unsupported_model"


class CapabilityError(InvalidInputError):
    """The model cannot do what was asked (e.g. text encoding on a vision-only model)."""

    code = "unsupported_operation"


class EncoderOutOfMemoryError(UnavailableError):
    code = "out_of_memory"


class ImageRejectedError(InvalidInputError):
    """An image input was refused by the image door; ``code`` says why.

    Codes: ``too_large``, ``too_many_pixels``, ``unsupported_format``, ``corrupt``, ``empty``,
    ``invalid_base64``, ``forbidden_path``, ``not_found``, ``forbidden_url``, ``fetch_failed``,
    ``invalid_input`` (the input item itself has the wrong shape, e.g. both ``url`` and ``path``).
    """

    code = "corrupt"


def os_error_text(error: OSError) -> str:
    """An OS error as one line: what failed and where (``[Errno 28] ...`` reads badly)."""
    reason = error.strerror or type(error).__name__
    where = error.filename if error.filename is not None else None
    return f"{reason}: {where}" if where else reason
