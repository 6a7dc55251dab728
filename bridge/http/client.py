"""The shared outbound HTTP layer: rate limit, credentials, timeout, classify, translate errors.

The daemon creates the ``aiohttp.ClientSession`` and closes it; :class:`HttpClient` only
borrows it. Every call goes through the destination's :class:`RateLimiter`, is classified
by the destination's :class:`ResponsePolicy`, and fails with the bridge's own errors:
``RetriableDeliveryError`` (with ``retry_after``; ``outcome_unknown`` only when the request
may have left: a connection was held, see :mod:`bridge.http.sent`), or
``PermanentDeliveryError`` (``CredentialsRefused`` for a final 401). Error text names the
status, method and path, never header values or bodies' secrets; ``repr`` of requests and
responses redacts credentials.

Order of one attempt: wait for the governor's admission, *then* attach credentials
(:class:`Credentials`), record the admission in the store (:mod:`bridge.http.journal`), send.
A token is therefore never aged by the queue: a token that expired while its request waited
is never sent. A 401 to credentials that can be refreshed (:attr:`Credentials.refreshable`)
hands the refused credential back (one refresh however many callers saw it refused) and
the request goes again, keeping its place in line; it fails with
:class:`~bridge.errors.CredentialsRefused` when a credential it was refused with comes back
or after ``MAX_REAUTH`` refreshes. A 401 to credentials that cannot be refreshed (a static
token, or none) fails with it at once: a dead letter, never a quiet retry. This is the only
re-authentication loop of the bridge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import tenacity
from pydantic import SecretStr

from bridge.errors import (
    CredentialsRefused,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.http.journal import AdmissionJournal, AdmissionLog
from bridge.http.policy import Action, Backoff, ResponsePolicy
from bridge.http.ratelimit import Priority, RateLimiter, Slot
from bridge.http.sent import SendRecord, request_record, traced

log = logging.getLogger(__name__)

_RATE_HEADERS = {"x-ratelimit-remaining-second": 1.0, "x-ratelimit-remaining-minute": 60.0}


@dataclass(frozen=True)
class OutboundRequest:
    """A request as it will go on the wire. ``headers`` may hold credentials and a
    ``credentials_exchange`` (a token call) holds secrets in its body: ``repr``, ``str``
    and :meth:`describe` redact both."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    data: bytes | None = None
    params: Mapping[str, str] | None = None
    credentials_exchange: bool = False
    """A token call: its body (and its answer's) carry secrets; never shown."""

    def describe(self) -> dict[str, Any]:
        """A printable copy with credential headers redacted (for dry-run and dead letters)."""
        from bridge.logs import REDACTED, redact

        return {
            "method": self.method,
            "url": redact(self.url),
            "params": redact(dict(self.params or {})),
            "headers": redact(dict(self.headers)),
            "json": REDACTED if self.credentials_exchange else redact(self.json),
        }

    def __repr__(self) -> str:
        shown = self.describe()
        return (
            f"OutboundRequest(method={shown['method']!r}, url={shown['url']!r},"
            f" headers={shown['headers']!r}, json={shown['json']!r},"
            f" data={'<redacted>' if self.data is not None else None},"
            f" params={shown['params']!r})"
        )

    __str__ = __repr__

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass(frozen=True)
class Response:
    """A partner's answer. The body of a credentials exchange is never shown."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    credentials_exchange: bool = False

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self, limit: int = 4000) -> str:
        """The body for error messages and dead letters (redacted)."""
        from bridge.logs import REDACTED, redact

        if self.credentials_exchange:
            return REDACTED
        shown: str = redact(self.body[:limit].decode("utf-8", "replace"))
        return shown

    def describe(self, limit: int = 4000) -> dict[str, Any]:
        return {"status": self.status, "body": self.text(limit)}

    def __repr__(self) -> str:
        from bridge.logs import redact

        return (
            f"Response(status={self.status}, headers={redact(dict(self.headers))!r},"
            f" body={self.text(200)!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class Authorized:
    """A request with credentials attached, and which credential it carries."""

    request: OutboundRequest
    credential: SecretStr


class Credentials(Protocol):
    """Attaches a partner's credentials to a request *after* the governor admitted it.

    ``refreshable`` says whether a refused credential can be replaced: when false, a 401
    is final (:class:`~bridge.errors.CredentialsRefused`) and ``refused`` is never called.
    ``authorize`` answers ``None`` when the current credential was just refused and is
    being replaced: the admission is given back and the request waits on ``ready``.
    ``refused`` replaces a refused credential once, however many callers saw it refused
    (and returns when the replacement is done or failed). Neither may wait for an
    admission of the limiter the request holds (``authorize``) or waits for (``ready``)."""

    @property
    def refreshable(self) -> bool: ...

    async def ready(self) -> None: ...

    async def authorize(self, request: OutboundRequest) -> Authorized | None: ...

    async def refused(self, credential: SecretStr) -> None: ...


class StaticCredentials:
    """Fixed credential headers (a static token, basic auth), attached on admission; they
    cannot be refreshed, so a 401 is final. ``credential`` is what the headers carry."""

    refreshable = False

    def __init__(self, headers: Mapping[str, str], credential: SecretStr) -> None:
        self._headers = dict(headers)
        self._credential = credential

    def __repr__(self) -> str:
        return f"StaticCredentials(headers={sorted(self._headers)!r})"

    async def ready(self) -> None:
        """Nothing is ever being replaced."""

    async def authorize(self, request: OutboundRequest) -> Authorized:
        return Authorized(with_headers(request, self._headers), self._credential)

    async def refused(self, credential: SecretStr) -> None:
        """Nothing to refresh (never called: ``refreshable`` is false)."""


@dataclass
class DestinationHealth:
    """Whether a destination is failing (5xx, 429, timeouts, no connection) or answering.

    ``recovered`` becomes true when it answers after an outage: at least ``min_failures``
    failed calls over at least ``min_outage`` seconds (first failure to first answer); the
    engine takes it (:meth:`take_recovery`) and makes the destination's waiting retries due
    at once. Both minimums keep one call that fails on its own, between answers to others,
    from being expedited over and over."""

    min_outage: float = 1.0
    min_failures: int = 2
    failing_since: float | None = None
    failures: int = 0
    bare_429s: int = 0
    """Consecutive 429s without ``Retry-After``: the attempt number of the pause backoff."""
    recovered: bool = False
    outages: int = 0

    def failed(self, now: float) -> None:
        """A call failed as an unavailable destination fails (5xx, 429, no answer)."""
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1

    def answered(self, now: float) -> None:
        """The destination answered a call (success, or a refusal of that call alone)."""
        self.bare_429s = 0
        if self.failing_since is not None:
            if now - self.failing_since >= self.min_outage and self.failures >= self.min_failures:
                self.recovered = True
                self.outages += 1
            self.failing_since = None
            self.failures = 0

    def take_recovery(self) -> bool:
        """True once after each recovery."""
        recovered, self.recovered = self.recovered, False
        return recovered


@dataclass
class DestinationLimits:
    """How one partner destination is called: its limiter, policy, timeout, backoff.

    ``backoff`` is the destination's retry backoff (configured per destination); a bare 429
    (no ``Retry-After``) pauses the limiter for its next delay, unless
    ``default_pause_on_429`` fixes the pause."""

    name: str
    limiter: RateLimiter = field(default_factory=RateLimiter)
    policy: ResponsePolicy = field(default_factory=ResponsePolicy)
    timeout: float = 30.0
    default_pause_on_429: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=300.0))
    health: DestinationHealth = field(default_factory=DestinationHealth)
    journal: AdmissionJournal = field(init=False)

    def __post_init__(self) -> None:
        self.journal = AdmissionJournal(self.name, self.timeout)

    def pause_for_429(self) -> float:
        """Seconds to pause after a 429 without ``Retry-After``."""
        if self.default_pause_on_429 is not None:
            return self.default_pause_on_429
        self.health.bare_429s += 1
        return self.backoff.delay(self.health.bare_429s)


MAX_REAUTH = 2
"""Refreshes one request may cause before its 401 is final (each with a new credential)."""


class HttpClient:
    """Sends :class:`OutboundRequest` s for the bridge; borrows the session, never closes it.

    ``admissions`` (the store) keeps the governors' admissions across restarts."""

    def __init__(
        self, session: aiohttp.ClientSession, admissions: AdmissionLog | None = None
    ) -> None:
        self.session = session
        self.admissions = admissions

    async def send(
        self,
        request: OutboundRequest,
        dest: DestinationLimits,
        priority: Priority = Priority.LIVE,
        *,
        credentials: Credentials | None = None,
    ) -> Response:
        """One attempt (plus a resend per refreshed credential). Returns the response when
        the policy says done; raises otherwise."""
        where = f"{request.method} {request.path}"
        refused: list[SecretStr] = []
        ticket = dest.limiter.ticket()  # a request sent again keeps its place in line
        while True:
            if credentials is not None:
                await credentials.ready()
            if self.admissions is not None:
                await dest.journal.seed(self.admissions, dest.limiter)
            slot = await dest.limiter.acquire(priority, ticket)
            try:
                authorized = await credentials.authorize(request) if credentials else None
            except BaseException:
                slot.release()
                raise
            if credentials is not None and authorized is None:
                slot.release()  # its credential is being replaced: wait for the new one
                continue
            wire = authorized.request if authorized is not None else request
            if authorized is not None and any(
                authorized.credential.get_secret_value() == r.get_secret_value() for r in refused
            ):
                slot.release()
                raise self._credentials_refused(dest, where, "after re-authentication")
            response = await self._exchange(wire, dest, slot, where)
            action = dest.policy.classify(response.status, response.headers, response.body)
            if action is Action.REAUTH:
                dest.health.answered(time.monotonic())
                answer = response.text(2000)
                if credentials is None or authorized is None:
                    raise self._credentials_refused(dest, where, "and none are attached", answer)
                if not credentials.refreshable:
                    raise self._credentials_refused(
                        dest, where, "and they cannot be refreshed", answer
                    )
                if len(refused) >= MAX_REAUTH:
                    raise self._credentials_refused(dest, where, "after re-authentication", answer)
                refused.append(authorized.credential)
                await credentials.refused(authorized.credential)
                continue
            return self._outcome(response, action, dest, where)

    @staticmethod
    def _credentials_refused(
        dest: DestinationLimits, where: str, why: str, body: str | None = None
    ) -> CredentialsRefused:
        return CredentialsRefused(
            f"credentials refused (401) by {dest.name}: {where}, {why}: fix the credentials,"
            " then replay the dead letter",
            status=401,
            destination=dest.name,
            body=body,
        )

    async def _exchange(
        self, request: OutboundRequest, dest: DestinationLimits, slot: Slot, where: str
    ) -> Response:
        """Record the admission, send, read the answer; transport errors translated."""
        row: int | None = None
        if self.admissions is not None:
            try:
                row = await dest.journal.admitted(self.admissions, dest.limiter)
            except Exception as exc:  # nothing was sent: safe to retry later
                slot.release()
                raise RetriableDeliveryError(
                    f"{dest.name}: {where}: the admission could not be recorded"
                    f" ({type(exc).__name__}); not sent",
                    destination=dest.name,
                ) from exc
            except BaseException:  # cancelled: the slot must not stay "in flight" for ever
                slot.release()
                raise
        with request_record() as sent:
            try:
                async with self.session.request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    json=request.json if request.data is None else None,
                    data=request.data,
                    params=dict(request.params) if request.params else None,
                    timeout=aiohttp.ClientTimeout(total=dest.timeout),
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    response = Response(
                        resp.status, dict(resp.headers), body, request.credentials_exchange
                    )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                dest.health.failed(time.monotonic())
                raise RetriableDeliveryError(
                    f"{dest.name}: {where} could not connect ({type(exc).__name__}); not sent",
                    destination=dest.name,
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                dest.health.failed(time.monotonic())
                raise self._no_answer(exc, dest, where, self._may_have_left(sent)) from exc
            finally:
                slot.done()
                if self.admissions is not None:
                    dest.journal.answered(row, self.admissions.clock())
        self._calibrate(dest, response)
        return response

    def _may_have_left(self, sent: SendRecord) -> bool:
        """Whether a failed request may have reached the partner: it held a connection, as
        a traced session tells; on an untraced session, always (the safe side)."""
        return sent.may_have_left or not traced(self.session)

    @staticmethod
    def _no_answer(
        exc: BaseException, dest: DestinationLimits, where: str, may_have_left: bool
    ) -> RetriableDeliveryError:
        what = (
            f"timed out after {dest.timeout:g}s"
            if isinstance(exc, TimeoutError)
            else f"failed ({type(exc).__name__})"
        )
        if not may_have_left:
            return RetriableDeliveryError(
                f"{dest.name}: {where} {what} before it got a connection; not sent",
                destination=dest.name,
            )
        return RetriableDeliveryError(
            f"{dest.name}: {where} {what} after it may have been sent; outcome unknown",
            destination=dest.name,
            outcome_unknown=True,
        )

    def _outcome(
        self, response: Response, action: Action, dest: DestinationLimits, where: str
    ) -> Response:
        now = time.monotonic()
        if action is Action.RETRY:
            dest.health.failed(now)
        else:
            dest.health.answered(now)
        if action is Action.DONE:
            return response
        text = response.text(2000)
        if action is Action.RETRY:
            retry_after = dest.policy.retry_after(response.headers)
            if response.status == 429:
                dest.limiter.pause(retry_after if retry_after is not None else dest.pause_for_429())
            raise RetriableDeliveryError(
                f"{dest.name}: {where} answered {response.status}",
                status=response.status,
                destination=dest.name,
                body=text,
                retry_after=retry_after,
            )
        raise PermanentDeliveryError(
            f"{dest.name}: {where} answered {response.status}",
            status=response.status,
            destination=dest.name,
            body=text,
        )

    @staticmethod
    def _calibrate(dest: DestinationLimits, response: Response) -> None:
        for name, value in response.headers.items():
            period = _RATE_HEADERS.get(name.lower())
            if period is not None and value.strip().isdigit():
                dest.limiter.calibrate(period, int(value))

    async def call(
        self,
        request: OutboundRequest,
        dest: DestinationLimits,
        *,
        priority: Priority = Priority.LIVE,
        attempts: int = 3,
        backoff: Backoff | None = None,
        max_wait: float = 10.0,
        credentials: Credentials | None = None,
    ) -> Response:
        """``send`` with in-call retries of retriable failures only (tenacity), for callers
        that cannot park work in the outbox (a shopper is waiting). A 401 is handled by
        ``send`` alone (refreshable credentials refreshed once and sent again, else
        ``CredentialsRefused``), never retried here."""
        backoff = backoff or Backoff(initial=0.2, cap=max_wait)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return min(max_wait, backoff.delay(state.attempt_number, retry_after))

        def retriable(exc: BaseException) -> bool:
            return isinstance(exc, RetriableDeliveryError) and not isinstance(exc, NotReady)

        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(retriable),
            stop=tenacity.stop_after_attempt(attempts),
            wait=wait,
            sleep=asyncio.sleep,
            reraise=True,
        ):
            with attempt:
                return await self.send(request, dest, priority, credentials=credentials)
        raise AssertionError("unreachable")  # pragma: no cover


def with_headers(request: OutboundRequest, headers: Mapping[str, str]) -> OutboundRequest:
    """``request`` with ``headers`` added (credentials, usually)."""
    return replace(request, headers={**request.headers, **headers})


__all__ = [
    "Authorized",
    "Credentials",
    "DestinationHealth",
    "DestinationLimits",
    "HttpClient",
    "OutboundRequest",
    "Response",
    "StaticCredentials",
    "with_headers",
]
