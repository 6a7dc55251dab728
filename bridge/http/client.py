"""The shared outbound HTTP layer: rate limit, timeout, classify, translate errors.

The daemon creates the ``aiohttp.ClientSession`` and closes it; :class:`HttpClient` only
borrows it. Every call goes through the destination's :class:`RateLimiter`, is classified
by the destination's :class:`ResponsePolicy`, and fails with the bridge's own errors:
``RetriableDeliveryError`` (with ``retry_after``), ``ReauthRequired`` or
``PermanentDeliveryError``. Error text names the status, method and path, never header
values or bodies' secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import tenacity

from bridge.errors import PermanentDeliveryError, ReauthRequired, RetriableDeliveryError
from bridge.http.policy import Action, Backoff, ResponsePolicy
from bridge.http.ratelimit import Priority, RateLimiter

log = logging.getLogger(__name__)

_RATE_HEADERS = {"x-ratelimit-remaining-second": 1.0, "x-ratelimit-remaining-minute": 60.0}


@dataclass(frozen=True)
class OutboundRequest:
    """A request as it will go on the wire (``headers`` may hold credentials: never log)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    data: bytes | None = None
    params: Mapping[str, str] | None = None

    def describe(self) -> dict[str, Any]:
        """A printable copy with credential headers redacted (for dry-run and dead letters)."""
        from bridge.logs import redact

        return {
            "method": self.method,
            "url": self.url,
            "params": dict(self.params or {}),
            "headers": redact(dict(self.headers)),
            "json": self.json,
        }

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def describe(self, limit: int = 4000) -> dict[str, Any]:
        return {"status": self.status, "body": self.body[:limit].decode("utf-8", "replace")}


@dataclass
class DestinationLimits:
    """How one partner destination is called: its limiter, policy, timeout, priority."""

    name: str
    limiter: RateLimiter = field(default_factory=RateLimiter)
    policy: ResponsePolicy = field(default_factory=ResponsePolicy)
    timeout: float = 30.0
    default_pause_on_429: float = 5.0


class HttpClient:
    """Sends :class:`OutboundRequest` s for the bridge; borrows the session, never closes it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(
        self,
        request: OutboundRequest,
        dest: DestinationLimits,
        priority: Priority = Priority.LIVE,
    ) -> Response:
        """One attempt. Returns the response when the policy says done; raises otherwise."""
        slot = await dest.limiter.acquire(priority)
        where = f"{request.method} {request.path}"
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
                response = Response(resp.status, dict(resp.headers), body)
        except TimeoutError as exc:
            raise RetriableDeliveryError(
                f"{dest.name}: {where} timed out after {dest.timeout:g}s",
                destination=dest.name,
                outcome_unknown=True,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise RetriableDeliveryError(
                f"{dest.name}: {where} could not connect: {type(exc).__name__}",
                destination=dest.name,
            ) from exc
        except aiohttp.ClientError as exc:
            raise RetriableDeliveryError(
                f"{dest.name}: {where} failed mid-call: {type(exc).__name__}",
                destination=dest.name,
                outcome_unknown=True,
            ) from exc
        finally:
            slot.done()
        self._calibrate(dest, response)
        action = dest.policy.classify(response.status, response.headers, response.body)
        if action is Action.DONE:
            return response
        text = response.body[:2000].decode("utf-8", "replace")
        if action is Action.REAUTH:
            raise ReauthRequired(
                f"{dest.name}: {where} answered 401", status=401, destination=dest.name, body=text
            )
        if action is Action.RETRY:
            retry_after = dest.policy.retry_after(response.headers)
            if response.status == 429:
                dest.limiter.pause(
                    retry_after if retry_after is not None else dest.default_pause_on_429
                )
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
        build: Callable[[], Awaitable[OutboundRequest]] | OutboundRequest,
        dest: DestinationLimits,
        *,
        priority: Priority = Priority.LIVE,
        attempts: int = 3,
        backoff: Backoff | None = None,
        max_wait: float = 10.0,
        on_reauth: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """``send`` with in-call retries of retriable failures only (tenacity), for callers
        that cannot park work in the outbox (a shopper is waiting). A 401 triggers
        ``on_reauth`` once, then the request is rebuilt and sent again."""
        backoff = backoff or Backoff(initial=0.2, cap=max_wait)
        reauthed = False

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return min(max_wait, backoff.delay(state.attempt_number, retry_after))

        async for attempt in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RetriableDeliveryError),
            stop=tenacity.stop_after_attempt(attempts),
            wait=wait,
            sleep=asyncio.sleep,
            reraise=True,
        ):
            with attempt:
                request = build if isinstance(build, OutboundRequest) else await build()
                try:
                    return await self.send(request, dest, priority)
                except ReauthRequired:
                    if on_reauth is None or reauthed:
                        raise PermanentDeliveryError(
                            f"{dest.name}: credentials refused (401) after re-authentication",
                            status=401,
                            destination=dest.name,
                        ) from None
                    reauthed = True
                    await on_reauth()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
