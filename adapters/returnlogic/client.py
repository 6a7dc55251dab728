"""Calls to ReturnLogic: one token set and one rate governor per team.

Tokens. A private app uses its static token. A public app exchanges the installation
code at ``POST /v1/oauth`` (callback route) and keeps ``bearer_token`` and
``refresh_token`` per team, encrypted at rest (:class:`bridge.vault.TokenVault`). On a
401 the bearer is refreshed once per team however many requests failed together (a lock;
a request that waited re-reads the vault and uses the token another one obtained). The
rotated refresh token is persisted (compare-and-set) *before* the new bearer is used, so a
crash can never leave only a spent refresh token behind. A refresh that ReturnLogic
refuses marks the retailer not ready and stops calls until a new installation. Token calls
have their own small governor (:attr:`RlTeam.token_limits`), never the team's budget.

The bearer is attached after the team's governor admits a request (:class:`RlCredentials`),
never before it waits: a token cannot expire in the queue. While a refused bearer is being
replaced, admitted requests give their slot back and wait for the new one instead of
spending the budget on certain 401s.

Rate. ReturnLogic allows 2 requests/s and 120/min per key: one :class:`RateLimiter` per
team enforces both sliding windows for every caller, serving live requests before
reconciliation before backfill, calibrated by the ``X-RateLimit-Remaining-*`` headers;
its admissions are kept in the store, so a restarted daemon starts with the windows its
predecessor left (:mod:`bridge.http.journal`). A 429 pauses the team (``Retry-After`` when
given, else the configured ``retry`` backoff) and the request is retried, never failing a
sync; a 503 (maintenance) backs off and retries too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import SecretStr

from adapters.returnlogic.config import ReturnLogicConfig
from bridge.errors import (
    BridgeError,
    CredentialsRefused,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.http import (
    Authorized,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Priority,
    RateLimiter,
    Response,
    Window,
    with_headers,
)
from bridge.logs import register_secret
from bridge.vault import TokenVault

log = logging.getLogger(__name__)

T = TypeVar("T")


class NeedsInstallation(NotReady):
    """The team has no usable token (the app is not installed yet, or ReturnLogic refused our
    refresh token and the retailer must install it again).

    Not permanent (:class:`~bridge.errors.NotReady`): the installation ends it, so the work
    waits instead of becoming dead letters to replay: effects are retried every
    ``INSTALL_RETRY_AFTER`` seconds or more until their deadline, and a synchronous caller
    (an exchange order) gets 503 with ``Retry-After``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=INSTALL_RETRY_AFTER)


INSTALL_RETRY_AFTER = 60.0


class RlTeam:
    """Everything shared by the callers of one ReturnLogic team: tokens and governor."""

    def __init__(
        self,
        config: ReturnLogicConfig,
        http: Callable[[], HttpClient],
        vault: Callable[[], TokenVault | None],
    ) -> None:
        self.config = config
        self.team_id = config.team_id
        self._http = http
        self._vault = vault
        self.limits = DestinationLimits(
            f"returnlogic:{config.team_id}",
            limiter=RateLimiter(
                [Window(config.requests_per_second, 1.0), Window(config.requests_per_minute, 60.0)],
                safety=0.02,
            ),
            timeout=config.timeout,
            backoff=config.retry.backoff(),
            default_pause_on_429=config.retry.pause_on_429,
        )
        self.credentials = RlCredentials(self)
        self._refresh_lock = asyncio.Lock()
        self.refreshes = 0
        self.broken: str | None = None
        """Why calls are stopped (refresh refused), or ``None``."""

    @property
    def base(self) -> str:
        return str(self.config.base_url).rstrip("/")

    @property
    def vault_name(self) -> str:
        return f"returnlogic:{self.team_id}"

    # tokens ------------------------------------------------------------------------------

    async def bearer(self) -> SecretStr:
        if self.config.static_token is not None:
            return self.config.static_token
        if self.broken:
            raise NeedsInstallation(f"returnlogic: {self.broken}")
        vault = self._vault()
        sealed = await vault.get(self.vault_name) if vault else None
        if sealed is None:
            raise NeedsInstallation(
                f"returnlogic: team {self.team_id} has not installed the app yet (no token)"
            )
        register_secret(sealed.data["bearer_token"])
        register_secret(sealed.data.get("refresh_token"))
        return SecretStr(sealed.data["bearer_token"])

    async def install(self, code: str) -> None:
        """Exchange an installation code for tokens and keep them (callback)."""
        body = await self._oauth({"grant_type": "authorization_code", "code": code})
        vault = self._require_vault()
        current = await vault.get(self.vault_name)
        stored = await vault.put(self.vault_name, body, current.version if current else None)
        if not stored:
            raise BridgeError("another installation stored tokens at the same time; retry")
        self.broken = None

    async def refresh(self, refused: SecretStr) -> None:
        """Replace ``refused`` once, whoever else saw it refused at the same time."""
        if self.config.static_token is not None:
            raise NeedsInstallation("returnlogic: the static token was refused (401)")
        vault = self._require_vault()
        async with self._refresh_lock:
            sealed = await vault.get(self.vault_name)
            if sealed is None:
                raise NeedsInstallation(f"returnlogic: team {self.team_id} has no token")
            if sealed.data["bearer_token"] != refused.get_secret_value():
                return  # refreshed meanwhile by another caller (or process)
            try:
                body = await self._oauth(
                    {"grant_type": "refresh_token", "refresh_token": sealed.data["refresh_token"]}
                )
            except PermanentDeliveryError as exc:
                self.broken = f"the refresh token was refused ({exc.status}); install the app again"
                log.error("returnlogic refresh refused", extra={"team": self.team_id})
                raise NeedsInstallation(f"returnlogic: {self.broken}") from exc
            if not await vault.put(self.vault_name, body, sealed.version):
                return  # another process stored newer tokens: use theirs
            self.refreshes += 1

    @functools.cached_property
    def token_limits(self) -> DestinationLimits:
        """The governor of token calls (``POST /v1/oauth``), apart from the team's: ReturnLogic
        counts its windows per API key and a token call carries none, so an installation or
        a refresh never takes a slot from the team's live request budget. Its own small
        windows (1/s, 10/min) bound a refresh loop; the installation callback reaches it
        only with a state the bridge issued (:mod:`adapters.returnlogic.inbound`)."""
        return DestinationLimits(
            f"returnlogic-oauth:{self.team_id}",
            limiter=RateLimiter([Window(1, 1.0), Window(10, 60.0)], safety=0.02),
            timeout=self.config.timeout,
            default_pause_on_429=1.0,
        )

    async def _oauth(self, grant: dict[str, str]) -> dict[str, Any]:
        if self.config.client_id is None or self.config.client_secret is None:
            raise NeedsInstallation("returnlogic: OAuth needs client_id and client_secret")
        request = OutboundRequest(
            "POST",
            f"{self.base}/v1/oauth",
            {"Content-Type": "application/json", "Accept": "application/json"},
            json={
                **grant,
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.get_secret_value(),
            },
            credentials_exchange=True,
        )
        try:
            response = await self._http().call(request, self.token_limits, attempts=4)
        except CredentialsRefused as exc:
            raise PermanentDeliveryError(
                "returnlogic: /v1/oauth refused the grant", status=401
            ) from exc
        body = response.json()
        if not isinstance(body, dict) or not {"bearer_token", "refresh_token"} <= set(body):
            raise PermanentDeliveryError("returnlogic: /v1/oauth answered without tokens")
        return {"bearer_token": body["bearer_token"], "refresh_token": body["refresh_token"]}

    def _require_vault(self) -> TokenVault:
        vault = self._vault()
        if vault is None:
            raise NeedsInstallation(
                f"returnlogic: no token key ({self.config.token_key_env}) to keep tokens with"
            )
        return vault

    # requests ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        priority: Priority = Priority.LIVE,
        attempts: int = 8,
    ) -> Response:
        """One API call under the team's governor; 429 and 503 wait and retry (the team's
        ``retry`` backoff), a 401 refreshes the token once, then the call is sent again.
        ``data`` is a body already encoded (e.g. exact Decimal money,
        ``mappings.returnlogic.dumps``); the bearer is attached on admission."""
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = OutboundRequest(
            method,
            f"{self.base}{path}",
            headers,
            json=json,
            data=data,
            params={k: _param(v) for k, v in (params or {}).items() if v is not None},
        )
        backoff = self.limits.backoff
        return await self._http().call(
            request,
            self.limits,
            priority=priority,
            attempts=attempts,
            backoff=backoff,
            max_wait=backoff.cap,
            credentials=self.credentials,
        )


class RlCredentials:
    """The team's bearer as :class:`~bridge.http.Credentials`: read from the vault when a
    request is admitted; a refused bearer is replaced once (:meth:`RlTeam.refresh`), and
    until then admitted requests hand their slot back and wait (the refresh itself needs
    an admission of the same governor)."""

    def __init__(self, team: RlTeam) -> None:
        self.team = team
        self._replacing: asyncio.Event | None = None
        self._refused: str | None = None

    @property
    def refreshable(self) -> bool:
        """A public app's bearer is refreshed; a private app's static token cannot be."""
        return self.team.config.static_token is None

    async def ready(self) -> None:
        if self._replacing is not None:
            await self._replacing.wait()

    async def authorize(self, request: OutboundRequest) -> Authorized | None:
        token = await self.team.bearer()
        if self._refused is not None and token.get_secret_value() == self._refused:
            return None  # being replaced: wait for the new one instead of a certain 401
        bearer = {"Authorization": f"Bearer {token.get_secret_value()}"}
        return Authorized(with_headers(request, bearer), token)

    async def refused(self, credential: SecretStr) -> None:
        while self._replacing is not None:
            await self._replacing.wait()
        self._replacing, self._refused = asyncio.Event(), credential.get_secret_value()
        try:
            await self.team.refresh(credential)
        finally:
            event, self._replacing, self._refused = self._replacing, None, None
            event.set()


async def paginate(
    fetch: Callable[[int], Awaitable[list[T]]],
    *,
    page_size: int,
    what: str,
    skip: int = 0,
    total: int | None = None,
    prefetch: bool = False,
) -> AsyncGenerator[tuple[int, list[T]], None]:
    """``(skip, records)`` per page of a ReturnLogic list endpoint (``skip``/``limit``), where
    ``fetch(skip)`` reads one page; ends at a short page (or when ``skip`` reaches ``total``).

    A page repeating the previous one exactly (a server ignoring ``skip``) is an error, not an
    endless loop. With ``prefetch`` the next page is requested while the caller handles the
    current one, so the rate governor always has a request waiting."""
    pending: asyncio.Future[list[T]] | None = None
    previous: list[T] | None = None
    try:
        while True:
            records = await (pending if pending is not None else fetch(skip))
            pending = None
            if records and records == previous:
                raise PermanentDeliveryError(
                    f"returnlogic: {what} returned the same page twice (skip={skip})"
                )
            end = skip + len(records)
            more = len(records) >= page_size and (total is None or end < total)
            if more and prefetch:
                pending = asyncio.ensure_future(fetch(end))
            yield skip, records
            if not more:
                return
            previous, skip = records, end
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, BridgeError):
                await pending


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


__all__ = ["NeedsInstallation", "RetriableDeliveryError", "RlCredentials", "RlTeam", "paginate"]
