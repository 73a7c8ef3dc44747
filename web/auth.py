"""API keys: a guard on every ``/v1`` route and ``/metrics``; health probes stay open.

A handler says what it needs with ``opt={"access": Access.READ}``; without it, it needs an admin
key, so a new route is never accidentally open. Keys are compared in constant time, all of them,
so timing says nothing about which key (or which prefix) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from vizdex.web.settings import AuthSettings

ACCESS = "access"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vizdex"'}


class Access(StrEnum):
    READ = "read"  # encode, search, read collections/images/jobs
    ADMIN = "admin"  # everything, including writes


READ_ONLY: dict[str, Any] = {ACCESS: Access.READ}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.enabled
        self._keys = [(_digest(k), Access.ADMIN) for k in settings.admin_keys] + [
            (_digest(k), Access.READ) for k in settings.read_keys
        ]

    def role_of(self, key: str) -> Access | None:
        presented = _digest(key)
        role: Access | None = None
        for digest, access in self._keys:  # no early exit
            if hmac.compare_digest(digest, presented) and role is not Access.ADMIN:
                role = access
        return role


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    header = connection.headers.get("x-api-key")
    return header.strip() if header and header.strip() else None


def api_key_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    keys: KeyRing = connection.app.state["vizdex"].keys
    if not keys.enabled:
        return
    needed = Access(handler.opt.get(ACCESS, Access.ADMIN))
    key = presented_key(connection)
    if key is None:
        raise NotAuthorizedException(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=CHALLENGE,
        )
    role = keys.role_of(key)
    if role is None:
        raise NotAuthorizedException("the API key is not valid", headers=CHALLENGE)
    if needed is Access.ADMIN and role is not Access.ADMIN:
        raise PermissionDeniedException(
            "this API key may encode, search and read; changing collections needs an admin key"
        )
