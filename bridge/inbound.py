"""Receiving webhooks: authenticate, parse with limits, validate, store durably, answer.

The order is the delivery guarantee: a sender that is not authenticated gets 401 and
nothing is stored (nor logged beyond the path); an authenticated body is parsed by the
total parser (:mod:`bridge.jsonsafe`: depth, digits, sizes, surrogates, NaN, duplicate
keys) and validated *before* it is stored, then committed to the inbox before any answer.
A body that breaks a limit or fails validation is stored already quarantined, with its
reason, in that same commit (kept, never dropped, and never visible to the worker as
pending), and the sender gets a JSON error naming the field with the status its contract
asks for (some senders retry anything but 2xx forever, so an adapter may choose 200).

Authentication is total too: a malformed ``Authorization`` header, raw bytes or non-ASCII
in a credential header, or a credential of absurd length is a mismatch (401), never an
exception.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bridge.configbase import (
    InboundApiKeyAuth,
    InboundBasicAuth,
    InboundBearerAuth,
    InboundCredentials,
    InboundUnsupportedAuth,
)
from bridge.engine import INBOX_FLAG, Engine
from bridge.errors import MappingError, StoreError
from bridge.jsonsafe import check_text, loads
from bridge.store import Accepted, InboxStatus

log = logging.getLogger(__name__)

_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
MAX_CREDENTIAL_CHARS = 4096
"""Longer credential headers are refused unread (401)."""


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
    return {
        _printable(k): _printable(v)[:MAX_CREDENTIAL_CHARS]
        for k, v in headers.items()
        if k.lower() not in drop
    }


def _printable(text: str) -> str:
    """Header text as storable, loggable UTF-8: raw bytes (kept by aiohttp as surrogates)
    and any other lone surrogate become ``\\udcNN`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _credential_bytes(value: str | None) -> bytes | None:
    """A credential as bytes, or None when it cannot be one (raw bytes, surrogates, huge)."""
    if value is None or len(value) > MAX_CREDENTIAL_CHARS:
        return None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp keeps undecodable header bytes as surrogates
        return None


def basic_auth_matches(request: web.Request, username: str, password: str) -> bool:
    """HTTP Basic credentials compared in constant time; any malformed header is False."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded or _credential_bytes(encoded) is None:
        return False
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return False
    given_user, sep, given_password = decoded.partition(":")
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return bool(sep) and user_ok and password_ok


def header_secret_matches(request: web.Request, header: str, secret: str) -> bool:
    """A shared-secret header compared in constant time; an unusable value is False."""
    given = _credential_bytes(request.headers.get(header))
    return given is not None and hmac.compare_digest(given, secret.encode())


def secret_matches(given: str | None, secret: str) -> bool:
    """A shared secret from a query string (or anywhere) compared in constant time."""
    given_bytes = _credential_bytes(given)
    return given_bytes is not None and hmac.compare_digest(given_bytes, secret.encode())


def bearer_matches(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>`` compared in constant time; any malformed header
    (another scheme, no token, raw bytes, absurd length) is False."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given_bytes = _credential_bytes(given.strip())
    return (
        scheme.lower() == "bearer"
        and given_bytes is not None
        and len(given_bytes) > 0
        and hmac.compare_digest(given_bytes, token.encode())
    )


def authenticated(request: web.Request, auth: InboundCredentials | InboundUnsupportedAuth) -> bool:
    """The request carries the credentials ``auth`` configures (constant-time compare). A
    scheme the bridge cannot verify authenticates nobody (the config refuses it anyway)."""
    if isinstance(auth, InboundBasicAuth):
        return basic_auth_matches(request, auth.username, auth.password.get_secret_value())
    if isinstance(auth, InboundBearerAuth):
        return bearer_matches(request, auth.token.get_secret_value())
    if isinstance(auth, InboundApiKeyAuth):
        return header_secret_matches(request, auth.header, auth.key.get_secret_value())
    return False


def secret_headers_of(auth: InboundCredentials | InboundUnsupportedAuth) -> frozenset[str]:
    """Headers never stored with the body (the API key's)."""
    return frozenset({auth.header}) if isinstance(auth, InboundApiKeyAuth) else frozenset()


def challenge_of(auth: InboundCredentials | InboundUnsupportedAuth) -> str:
    """The ``WWW-Authenticate`` scheme a 401 names for ``auth``."""
    return "Bearer" if isinstance(auth, InboundBearerAuth) else "Basic"


def unauthorized(scheme: str = "Basic") -> web.Response:
    """401 naming the ``Authorization`` field, with the challenge of ``scheme``."""
    response = json_error(401, "missing or wrong credentials", field="Authorization")
    response.headers["WWW-Authenticate"] = f'{scheme} realm="returns-bridge"'
    return response


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object within the limits of :mod:`bridge.jsonsafe`, or
    ``MappingError`` naming the field that is wrong."""
    value = loads(body)
    if not isinstance(value, dict):
        raise MappingError("body must be a JSON object", field="body")
    return value


def refusal(body: bytes, validate: Callable[[bytes], Any] | None = None) -> MappingError | None:
    """Why the bridge will never accept ``body`` (``None``: it may be accepted).

    The body is parsed with limits first (nothing else sees a body that breaks one); then
    ``validate`` runs. An unexpected exception in ``validate`` is a refusal too, with the
    exception class in the reason: a bug in a mapping must not answer 500."""
    problem, _ = _checked(body, validate)
    return problem


def _checked(
    body: bytes,
    validate: Callable[[bytes], Any] | None,
    entity_of: Callable[[Any], str | None] | None = None,
) -> tuple[MappingError | None, str | None]:
    """:func:`refusal`, and the entity key ``entity_of`` gives the validated value (a body
    whose entity cannot be told is refused like one that does not validate)."""
    try:
        parsed = loads(body)
        if validate is not None:
            parsed = validate(body)
        return None, None if entity_of is None else entity_of(parsed)
    except MappingError as exc:
        return exc, None
    except Exception as exc:  # a mapping bug: refuse this body, keep serving
        log.warning(
            "validation raised unexpectedly",
            extra={"error": type(exc).__name__},
        )
        problem = MappingError(f"body could not be validated ({type(exc).__name__})", field="body")
        return problem, None


async def read_body(request: web.Request) -> bytes | web.Response:
    """The request body, or the 413 answer when it is larger than the configured limit."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body is larger than the configured limit", field="body")


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
    entity_of: Callable[[Any], str | None] | None = None,
) -> web.Response:
    """Parse and validate the (already authenticated) request, then store it in the inbox.

    A body that breaks a parsing limit, or for which ``validate`` raises
    :class:`MappingError`, is stored already quarantined (one commit: the worker never sees
    it pending) and answered ``invalid_status``. Returns 200 ``{"status": "accepted"}``
    otherwise, and 503 when the store could not commit (the sender should retry).

    ``entity_of``: the key of the entity a validated body is about (given what ``validate``
    returned); the engine handles one entity's items one at a time, in arrival order."""
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    problem, entity = _checked(body, validate, entity_of)
    headers = kept_headers(request.headers, secret_headers)
    try:
        accepted = await engine.accept_detailed(
            retailer,
            kind,
            key,
            body,
            headers,
            quarantine=_reason(problem) if problem else None,
            entity=entity,
        )
    except StoreError as exc:
        return _not_stored(retailer, kind, exc)
    if problem is not None:
        return await _refused(engine, retailer, kind, accepted, problem, invalid_status)
    if accepted.duplicate:
        await _requeue_if_quarantined(engine, accepted.inbox_id)
    return web.json_response({"status": "accepted", "inbox_id": accepted.inbox_id})


async def _requeue_if_quarantined(engine: Engine, inbox_id: int) -> None:
    """A sender's retry of a body we quarantined that now validates (the configuration or
    mapping was fixed meanwhile) is processed, not answered as a mere duplicate."""
    item = await engine.store.get_inbox(inbox_id)
    if item is not None and item.status is InboxStatus.QUARANTINED:
        await engine.replay_inbox(inbox_id)


def _reason(exc: MappingError) -> str:
    return f"{exc.field}: {exc}" if exc.field else str(exc)


def _not_stored(retailer: str, kind: str, exc: StoreError) -> web.Response:
    log.error(
        "inbox commit failed",
        extra={"retailer": retailer, "kind": kind, "error": f"{type(exc).__name__}: {exc}"},
    )
    response = json_error(503, "not stored, retry later")
    response.headers["Retry-After"] = "5"
    return response


async def _refused(
    engine: Engine,
    retailer: str,
    kind: str,
    accepted: Accepted,
    error: MappingError,
    status: int,
    stands_status: int | None = None,
) -> web.Response:
    """The answer to a refused, stored request. A body the inbox already held (same bytes)
    keeps its stored outcome: refusing a repeat of a body accepted earlier (say, with a
    wrong ``X-Optiturn-Id`` this time) does not quarantine what was already applied; the
    answer then says which item holds the body (``duplicate_of``) and that it stands, with
    ``stands_status`` when given (a sender that retries the error status need not)."""
    stands = False
    if accepted.duplicate:
        item = await engine.store.get_inbox(accepted.inbox_id)
        stands = item is not None and item.status is not InboxStatus.QUARANTINED
    fields = {"retailer": retailer, "kind": kind, "inbox_id": accepted.inbox_id}
    message = "request refused; its body was accepted before" if stands else "request quarantined"
    log.warning(message, extra={**fields, "reason": _reason(error)})
    extra: dict[str, Any] = {"duplicate_of": accepted.inbox_id} if stands else {}
    return json_error(
        stands_status if stands and stands_status is not None else status,
        str(error),
        field=error.field or "body",
        inbox_id=accepted.inbox_id,
        quarantined=not stands,
        **extra,
    )


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
    flag: str | None = None,
    stands_status: int | None = None,
) -> web.Response:
    """Keep an authenticated request the bridge refuses, stored quarantined in one commit,
    and answer a JSON error naming the field (``status`` as the sender's contract wants).

    ``flag``: also raise the quarantined item for an operator (``dlq list --flagged``), the
    text saying what settles it (``{inbox_id}`` is replaced by the item's id); for refusals
    a fix of the configuration settles, where the body itself is fine. ``stands_status``:
    see :func:`_refused`."""
    try:
        accepted = await engine.accept_detailed(
            retailer,
            kind,
            None,
            body,
            kept_headers(request.headers, secret_headers),
            quarantine=_reason(error),
        )
    except StoreError as exc:
        return _not_stored(retailer, kind, exc)
    if flag is not None:
        await _flag_quarantined(engine, retailer, accepted.inbox_id, error, flag)
    return await _refused(engine, retailer, kind, accepted, error, status, stands_status)


REPLAY_AFTER_FIX = "fix the configuration, then `returns-bridge inbox --replay {inbox_id}`"
"""The ``flag`` text of :func:`quarantine` for an inbox item the inbox handler applies."""


async def _flag_quarantined(
    engine: Engine, retailer: str, inbox_id: int, error: MappingError, action: str
) -> None:
    """Raise a quarantined item for an operator (once per item and reason); an item that
    was applied meanwhile needs nobody."""
    item = await engine.store.get_inbox(inbox_id)
    if item is None or item.status is not InboxStatus.QUARANTINED:
        return
    try:
        async with engine.store.transaction() as tx:
            await tx.add_flag(
                retailer,
                INBOX_FLAG,
                str(inbox_id),
                f"quarantined: {_reason(error)}; {action.format(inbox_id=inbox_id)}",
            )
    except StoreError as exc:  # the item is kept and listed by `inbox` all the same
        log.error("flag not stored", extra={"inbox_id": inbox_id, "error": str(exc)})


def header_text(request: web.Request, name: str, max_length: int = 1024) -> str | None:
    """Header ``name`` as safe text (``None`` when absent); ``MappingError`` naming the
    header when it holds raw bytes, surrogates, control characters or is too long."""
    value = request.headers.get(name)
    return None if value is None else check_text(value, name, max_length)
