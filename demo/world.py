"""Everything on loopback: the platform sandboxes and the daemon, with a generated config.

One retailer per guide scenario (``s01`` ... ``s22``): the guide reuses RMA and order
identifiers across scenarios, and a refunded RMA is closed for good, so each scenario
gets a retailer of its own, all pointing at the same sandboxes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from adapters.kibo.sandbox import KiboSandbox
from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import OptoroSandbox, load_scenarios
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox
from adapters.returnlogic.sandbox import running_sandbox as running_returnlogic
from bridge.app import Runtime, build_app, build_runtime
from bridge.config import load_config
from bridge.engine import EngineSettings
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK
from bridge.sandboxkit import serving
from demo.guide import guide_providers

OPTORO_CLIENT_ID = "demo-bridge"
OPTORO_SECRET = "demo-optoro-secret"  # noqa: S105 - sandbox credential
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "demo-webhook-password"  # noqa: S105 - sandbox credential
KIBO_TOKEN = "demo-kibo-token"  # noqa: S105 - sandbox credential
KIBO_NOTIFY_SECRET = "demo-kibo-notify"  # noqa: S105 - sandbox credential
OPTITURN_ID = "demo-optiturn"
ENV = {
    "DEMO_OPTORO_SECRET": OPTORO_SECRET,
    "DEMO_WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "DEMO_KIBO_TOKEN": KIBO_TOKEN,
    "DEMO_KIBO_NOTIFY": KIBO_NOTIFY_SECRET,
}


def scenario_retailer(number: int) -> str:
    return f"s{number:02d}"


DEMO_LINE_IDS = """# the guide's line ids are the Kibo sandbox's item ids
line_ids = "numeric"
exchange_lines_numeric = true
"""


def retailer_toml(
    retailer: str,
    optoro_url: str,
    kibo_url: str,
    policy: dict[str, str] | None = None,
    kibo_lines: str = DEMO_LINE_IDS,
) -> str:
    """``kibo_lines``: the Kibo table's line resolution (and other) keys."""
    policy_lines = "".join(f'{k} = "{v}"\n' for k, v in (policy or {}).items())
    return f"""
[retailers.{retailer}]
name = "Guide scenario {retailer}"
[retailers.{retailer}.policy]
{policy_lines}reconcile_every = 3600.0
[retailers.{retailer}.optoro]
base_url = "{optoro_url}"
client_id = "{OPTORO_CLIENT_ID}"
client_secret = "${{DEMO_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
gift_card_skus = ["GIFTCARD"]
[retailers.{retailer}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{DEMO_WEBHOOK_PASSWORD}}"
[retailers.{retailer}.kibo]
base_url = "{kibo_url}"
token = "${{DEMO_KIBO_TOKEN}}"
timeout = 5.0
{kibo_lines}unknown_outcome_wait = 5.0
[retailers.{retailer}.kibo.retry]
# loopback sandboxes: retry within seconds (the production default backs off to 300 s)
initial = 0.2
cap = 2.0
[retailers.{retailer}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{DEMO_KIBO_NOTIFY}}"
"""


SHOP = "shop"
"""The demo's ReturnLogic retailer: its seeded orders are synced to the Optoro sandbox."""


def shop_toml(
    optoro_url: str,
    kibo_url: str,
    rl_url: str,
    api_key: str,
    kibo_lines: str = DEMO_LINE_IDS,
    policy: dict[str, str] | None = None,
) -> str:
    """The shop: ReturnLogic (a private app's key) -> Optoro, returns in Kibo."""
    base = retailer_toml(SHOP, optoro_url, kibo_url, policy, kibo_lines=kibo_lines)
    return (
        base
        + f"""
[retailers.{SHOP}.returnlogic]
base_url = "{rl_url}"
team_id = "{DEFAULT_TEAM}"
static_token = "{api_key}"
timeout = 10.0
[retailers.{SHOP}.returnlogic.orders]
first_poll_days = 200.0
"""
    )


@dataclass
class World:
    optoro: OptoroSandbox
    kibo: KiboSandbox
    runtime: Runtime
    url: str
    session: aiohttp.ClientSession
    retailers: list[str] = field(default_factory=list)
    returnlogic: ReturnLogicSandbox | None = None

    def notifications_url(self, retailer: str) -> str:
        return f"{self.url}/retailers/{retailer}/kibo/notifications"

    def route_kibo_notifications(self, retailer: str) -> None:
        """The Kibo sandbox notifies one URL: point it at ``retailer``'s receiver."""
        self.kibo.configure(
            notification_url=self.notifications_url(retailer),
            notification_headers={"X-Kibo-Secret": KIBO_NOTIFY_SECRET},
        )


@contextlib.asynccontextmanager
async def running_world(
    folder: Path,
    scenario_numbers: Sequence[int],
    *,
    policy: dict[str, str] | None = None,
    extra_toml: Callable[[OptoroSandbox, KiboSandbox], str] | None = None,
    settings: EngineSettings | None = None,
    before_start: Callable[[Runtime], Any] | None = None,
    port: int = 0,
    shop_orders: int = 0,
    kibo_lines: str = DEMO_LINE_IDS,
    shop_policy: dict[str, str] | None = None,
) -> AsyncIterator[World]:
    """Sandboxes, then the daemon on ``port`` (0: a free one) with SQLite in ``folder``.
    With ``shop_orders``, a ReturnLogic sandbox seeded with that many orders (created over
    the last 180 days) backs the ``shop`` retailer (its policy ``shop_policy``)."""
    async with (
        running_optoro(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
        running_kibo(token=KIBO_TOKEN) as kibo,
        running_returnlogic() as returnlogic,
        aiohttp.ClientSession() as session,
    ):
        shop = ""
        if shop_orders:
            returnlogic.generate(orders=shop_orders, seed=7, anchor=datetime.now(UTC))
            shop = shop_toml(
                optoro.url,
                kibo.url,
                returnlogic.url,
                returnlogic.issue_api_key(),
                kibo_lines,
                shop_policy,
            )
        retailers = [scenario_retailer(n) for n in scenario_numbers]
        text = (
            f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[store]\nurl = "sqlite:///{folder / "bridge.db"}"\n'
            + "".join(retailer_toml(r, optoro.url, kibo.url, policy, kibo_lines) for r in retailers)
            + shop
            + (extra_toml(optoro, kibo) if extra_toml else "")
        )
        config_path = folder / "bridge.toml"
        config_path.write_text(text)
        config = load_config(config_path, env=ENV)
        runtime = build_runtime(config, engine_settings=settings or EngineSettings(idle_poll=0.05))
        for scenario in load_scenarios():
            retailer = scenario_retailer(scenario.number)
            if retailer in retailers:
                catalog, sink = guide_providers([scenario])
                runtime.provide(retailer, CATALOG, "guide", catalog)
                runtime.provide(retailer, EXCHANGE_ORDER_SINK, "guide", sink)
        if before_start is not None:
            before_start(runtime)
        async with serving(build_app(runtime), "127.0.0.1", port) as url:
            yield World(
                optoro,
                kibo,
                runtime,
                url,
                session,
                retailers,
                returnlogic if shop_orders else None,
            )
