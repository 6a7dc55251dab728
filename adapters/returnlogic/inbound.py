"""ReturnLogic's calls to the bridge, per retailer, under ``/retailers/<id>/returnlogic/``.

``GET oauth/callback?code=...&teamId=...&state=...`` — the app installation redirect. It
is refused (400/403, JSON error naming the field, nothing stored, ReturnLogic not called)
unless ``state`` is one the bridge issued for this retailer and its configured team
(``returns-bridge returnlogic install-url``, :mod:`bridge.oauthstate`: signed, expiring,
single use) and ``teamId`` is the retailer's configured team. Only then is the state
consumed and the code exchanged at ``POST /v1/oauth``; the tokens are kept for the team,
encrypted, and the first order poll is brought forward. So junk callbacks never spend the
team's rate budget nor send the client secret anywhere.
The query's shape is validated by :class:`mappings.returnlogic.OAuthCallbackQuery` (the
model ``/openapi.json`` shows); presence is checked here in that security order.
"""

from __future__ import annotations

import logging

from aiohttp import web

from adapters.returnlogic.client import RlTeam
from adapters.returnlogic.config import ReturnLogicConfig
from bridge.errors import BridgeError, ConfigError, DeliveryError, MappingError
from bridge.inbound import json_error
from bridge.oauthstate import StateRefused, StateSigner, consume
from bridge.ports import AdapterContext
from bridge.vault import key_from_env
from mappings.returnlogic import OAuthCallbackQuery

log = logging.getLogger(__name__)

MAX_CODE_LENGTH = 512
"""An authorization code longer than this (or not ASCII) is refused without a call."""


def state_signer(config: ReturnLogicConfig) -> StateSigner | None:
    """The signer of installation states for ``config``: keyed by the token encryption key
    (``token_key_env``); ``None`` for a private app (static token). ``ConfigError`` when
    the key is missing."""
    if config.static_token is not None:
        return None
    return StateSigner(key_from_env(config.token_key_env), config.install.state_ttl)


class RlCallback:
    """The OAuth installation redirect of one retailer."""

    def __init__(
        self,
        runtime: AdapterContext,
        retailer: str,
        team: RlTeam,
        config: ReturnLogicConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.team = team
        self.config = config or team.config
        self.signer: StateSigner | None = None
        self.problem: str | None = None
        """Why no installation can be accepted (no token key), or ``None``."""
        try:
            self.signer = state_signer(self.config)
        except ConfigError:
            self.problem = (
                f"the token key ({self.config.token_key_env}) is not set: an installation can"
                " be neither verified nor kept"
            )

    def routes(self) -> None:
        self.runtime.add_route(
            self.retailer,
            "returnlogic",
            "GET",
            "oauth/callback",
            self.callback,
            summary="ReturnLogic app installation redirect: the code is exchanged for tokens",
            query=OAuthCallbackQuery,
            responses={
                403: "teamId is not this retailer's team, or state is another's or used",
                503: "no token key: an installation can be neither verified nor kept",
                409: "the retailer uses a static token: nothing to install",
                502: "the exchange failed",
            },
        )

    async def callback(self, request: web.Request) -> web.Response:
        try:
            query = OAuthCallbackQuery.parse(request.query)
        except MappingError as exc:
            return json_error(400, str(exc), field=exc.field or "query")
        code, team_id = query.code, query.teamId
        if self.config.static_token is not None:
            return json_error(
                409, "this retailer uses a static token: there is no app to install", field="code"
            )
        if self.signer is None:
            return json_error(503, self.problem or "installation is not possible", field=None)
        if not code:
            return json_error(400, "the installation redirect carries no code", field="code")
        if len(code) > MAX_CODE_LENGTH or not code.isascii() or not code.isprintable():
            return json_error(400, "code is not an authorization code", field="code")
        try:
            state = self.signer.verify(query.state, self.retailer, self.config.team_id)
        except StateRefused as exc:
            return json_error(exc.status, str(exc), field=exc.field)
        if not team_id:
            return json_error(400, "the installation redirect carries no teamId", field="teamId")
        if team_id != self.config.team_id:
            return json_error(
                403, "teamId does not match this retailer's configured team", field="teamId"
            )
        try:
            await consume(self.runtime.store, state)
        except StateRefused as exc:
            return json_error(exc.status, str(exc), field=exc.field)
        try:
            await self.team.install(code)
        except DeliveryError as exc:
            return json_error(502, f"the code could not be exchanged: {exc}", field="code")
        except BridgeError as exc:
            return json_error(409, str(exc), field="code")
        log.info("installed", extra={"retailer": self.retailer, "team": team_id})
        self._poll_orders_now()
        await self._send_waiting_work()
        return web.json_response({"status": "installed", "team": team_id})

    async def _send_waiting_work(self) -> None:
        """Effects that waited for the installation (``NeedsInstallation`` is retried, not
        dead-lettered) go out now rather than at their next retry."""
        engine = self.runtime.engine
        ours = [
            name
            for name in engine.destinations
            if name.startswith("returnlogic.") and name.endswith(f":{self.retailer}")
        ]
        for name in ours:
            if await self.runtime.store.expedite(name):
                engine.wake_dispatcher()

    def _poll_orders_now(self) -> None:
        """Bring the retailer's next order poll forward: its first sync need not wait."""
        self.runtime.jobs.run_soon(f"returnlogic-orders-poll:{self.retailer}")
