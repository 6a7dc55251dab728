"""ReturnLogic's calls to the bridge, per retailer, under ``/retailers/<id>/returnlogic/``.

``GET oauth/callback?code=...&teamId=...`` — the app installation redirect: the code is
exchanged at ``POST /v1/oauth`` and the tokens kept for the team, encrypted. The query is
validated by :class:`mappings.returnlogic.OAuthCallbackQuery` (400 naming the parameter); a
``teamId`` other than the retailer's is a 403; a retailer configured with a ``static_token`` has
no app to install: 409, and no call to ReturnLogic.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.returnlogic.client import RlTeam
from bridge.errors import DeliveryError, MappingError
from bridge.inbound import json_error
from mappings.returnlogic import OAuthCallbackQuery


class RlCallback:
    def __init__(self, runtime: Any, retailer: str, team: RlTeam) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.team = team

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
                403: "teamId is not this retailer's team",
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
        if team_id != self.team.team_id:
            return json_error(
                403, "teamId does not match this retailer's configured team", field="teamId"
            )
        if self.team.config.static_token is not None:
            return json_error(
                409,
                "this retailer uses a static token (returnlogic.static_token): there is no app"
                " installation to complete",
                field="code",
            )
        try:
            await self.team.install(code)
        except DeliveryError as exc:
            return json_error(502, f"the code could not be exchanged: {exc}", field="code")
        return web.json_response({"status": "installed", "team": team_id})
