"""Receiving webhooks: authenticate, store durably, validate, answer.

The order is the delivery guarantee: a sender that is not authenticated gets 401 and
nothing is stored; an authenticated body is committed to the inbox *before* any answer;
a body that fails validation is then quarantined with its reason (kept, never dropped)
and the sender gets a JSON error naming the field, with the status the sender's contract
asks for (some senders retry anything but 2xx forever, so an adapter may choose 200).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bridge.configbase import InboundApiKeyAuth, InboundBasicAuth
from bridge.engine import Engine
from bridge.errors import MappingError, StoreError
from bridge.store import InboxStatus

log = logging.getLogger(__name__)

_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def json_error(status: int, message: str, field: str | None = None, **extra: Any) -> web.Response:
    """``{"error": {"message": ..., "field": ...}}`` with ``status``."""
    error: dict[str, Any] = {"message": message}
    if field is not None:
        error["field"] = field
    error.update(extra)
    return web.json_response({"error": error}, status=status)


def kept_headers(
    headers: Mapping[str, str], secret_headers: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Request headers worth storing with the body: credentials removed."""
    drop = _CREDENTIAL_HEADERS | {h.lower() for h in secret_headers}
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def basic_auth_matches(request: web.Request, username: str, password: str) -> bool:
    """HTTP Basic credentials compared in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, sep, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return bool(sep) and user_ok and password_ok


def header_secret_matches(request: web.Request, header: str, secret: str) -> bool:
    """A shared-secret header compared in constant time."""
    given = request.headers.get(header)
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


def bearer_matches(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def authenticated(request: web.Request, auth: InboundBasicAuth | InboundApiKeyAuth) -> bool:
    """The request carries the credentials ``auth`` configures (constant-time compare)."""
    if isinstance(auth, InboundBasicAuth):
        return basic_auth_matches(request, auth.username, auth.password.get_secret_value())
    return header_secret_matches(request, auth.header, auth.key.get_secret_value())


def secret_headers_of(auth: InboundBasicAuth | InboundApiKeyAuth) -> frozenset[str]:
    """Headers never stored with the body (the API key's)."""
    return frozenset({auth.header}) if isinstance(auth, InboundApiKeyAuth) else frozenset()


def unauthorized() -> web.Response:
    response = json_error(401, "missing or wrong credentials", field="Authorization")
    response.headers["WWW-Authenticate"] = 'Basic realm="returns-bridge"'
    return response


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ``MappingError`` saying why not."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MappingError(f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(value, dict):
        raise MappingError("body must be a JSON object", field="body")
    return value


async def receive(
    request: web.Request,
    engine: Engine,
    *,
    retailer: str,
    kind: str,
    validate: Callable[[bytes], Any] | None = None,
    key: str | None = None,
    invalid_status: int = 422,
    secret_headers: frozenset[str] = frozenset(),
) -> web.Response:
    """Store the (already authenticated) request in the inbox, then validate it.

    ``validate`` raises :class:`MappingError` for a body the bridge will never accept: it is
    quarantined and answered with ``invalid_status``. Returns 200 ``{"status": "accepted"}``
    otherwise, and 503 when the store could not commit (the sender should retry)."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body is larger than the configured limit", field="body")
    try:
        accepted = await engine.accept_detailed(
            retailer, kind, key, body, kept_headers(request.headers, secret_headers)
        )
    except StoreError:
        log.exception("inbox commit failed", extra={"retailer": retailer, "kind": kind})
        response = json_error(503, "not stored, retry later")
        response.headers["Retry-After"] = "5"
        return response
    inbox_id = accepted.inbox_id
    if validate is not None:
        try:
            validate(body)
        except MappingError as exc:
            async with engine.store.transaction() as tx:
                await tx.finish_inbox(inbox_id, None, InboxStatus.QUARANTINED, _reason(exc))
            log.warning(
                "webhook quarantined",
                extra={
                    "retailer": retailer,
                    "kind": kind,
                    "inbox_id": inbox_id,
                    "reason": _reason(exc),
                },
            )
            return json_error(
                invalid_status,
                str(exc),
                field=exc.field or "body",
                inbox_id=inbox_id,
                quarantined=True,
            )
    if accepted.duplicate:
        await _requeue_if_quarantined(engine, inbox_id)
    return web.json_response({"status": "accepted", "inbox_id": inbox_id})


async def _requeue_if_quarantined(engine: Engine, inbox_id: int) -> None:
    """A sender's retry of a body we quarantined that now validates (the configuration or
    mapping was fixed meanwhile) is processed, not answered as a mere duplicate."""
    item = await engine.store.get_inbox(inbox_id)
    if item is not None and item.status is InboxStatus.QUARANTINED:
        await engine.replay_inbox(inbox_id)


def _reason(exc: MappingError) -> str:
    return f"{exc.field}: {exc}" if exc.field else str(exc)


async def quarantine(
    request: web.Request,
    engine: Engine,
    body: bytes,
    *,
    retailer: str,
    kind: str,
    error: MappingError,
    status: int,
    secret_headers: frozenset[str] = frozenset(),
) -> web.Response:
    """Keep an authenticated request the bridge refuses, and answer a JSON error naming
    the field (``status`` as the sender's contract wants)."""
    accepted = await engine.accept_detailed(
        retailer, kind, None, body, kept_headers(request.headers, secret_headers)
    )
    async with engine.store.transaction() as tx:
        await tx.finish_inbox(accepted.inbox_id, None, InboxStatus.QUARANTINED, _reason(error))
    log.warning(
        "request quarantined",
        extra={
            "retailer": retailer,
            "kind": kind,
            "inbox_id": accepted.inbox_id,
            "reason": _reason(error),
        },
    )
    return json_error(
        status,
        str(error),
        field=error.field or "body",
        inbox_id=accepted.inbox_id,
        quarantined=True,
    )
