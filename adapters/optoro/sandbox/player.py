"""Play the guide's scenarios against a running bridge, as Optoro would.

:class:`ScenarioPlayer` walks a scenario's steps in order:

- ``rma`` steps: ``POST {bridge}/retailers/{retailer}/optoro/rmas`` with the sample body, the
  retailer's webhook authentication and the ``X-Optiturn-*`` headers; any 2xx is ``ok`` (what
  Optoro counts as delivered).
- ``exchange_variants`` steps: ``GET {bridge}/retailers/{retailer}/optoro{step.path}``; the JSON
  answer must equal the sample response exactly.
- ``exchange_order`` steps: ``POST {bridge}/retailers/{retailer}/optoro{step.path}``; the JSON
  answer must equal the sample response exactly (two samples show none: only the status is
  checked).
- ``returns_portal_order`` steps go the other way (the bridge sends them to Optoro): the player
  calls ``on_outbound_step(step)`` so the caller can make the bridge produce the order (seed an
  order source, say), then polls the sandbox until it has accepted, since ``play`` began, a
  version of each order of the step equal to the sample, normalised as
  :func:`~adapters.optoro.sandbox.compare.rpo_order_diff` says. Without a sandbox the step is
  reported ``not_checked``.

All 22 scenarios use order ``ORD1234567``: reset the sandbox (and the bridge) between scenarios.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from adapters.optoro.sandbox.compare import json_diff, rpo_order_diff
from adapters.optoro.sandbox.scenarios import Scenario, Step, StepKind
from adapters.optoro.sandbox.server import RPO_PATH, OptoroSandbox

__all__ = [
    "DEFAULT_API_VERSIONS",
    "ApiKey",
    "BasicAuth",
    "OutboundHook",
    "ScenarioPlayer",
    "ScenarioResult",
    "StepResult",
    "StepStatus",
]

StepStatus = Literal["ok", "mismatch", "error", "not_checked", "skipped"]
ApiKey = tuple[str, str]
"""An API-key header Optoro sends: ``(header name, value)``."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic credentials Optoro sends (aiohttp's own ``BasicAuth`` is deprecated since
    aiohttp 3.14; an instance of it is accepted too)."""

    login: str
    password: str = field(repr=False)

    def encode(self) -> str:
        """The ``Authorization`` header value."""
        raw = f"{self.login}:{self.password}".encode()
        return f"Basic {base64.b64encode(raw).decode('ascii')}"


Auth = BasicAuth | aiohttp.BasicAuth | ApiKey
OutboundHook = Callable[[Step], Awaitable[None]]

DEFAULT_API_VERSIONS: Mapping[str, int] = {"rma": 3, "exchange_variants": 1, "exchange_order": 1}
"""``X-Optiturn-Api-Version`` per call in Optoro's webhook catalog (for ``api_versions``)."""

_BODY_PREVIEW = 300


@dataclass(frozen=True)
class StepResult:
    """What happened at one step."""

    step: Step
    status: StepStatus
    detail: str = ""
    diff: tuple[str, ...] = ()
    http_status: int | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not_checked")

    def __str__(self) -> str:
        line = f"[{self.status}] {self.step}"
        if self.http_status is not None:
            line += f" -> {self.http_status}"
        if self.detail:
            line += f": {self.detail}"
        return "\n".join([line, *(f"    {d}" for d in self.diff)])


@dataclass(frozen=True)
class ScenarioResult:
    """Every step's result; ``ok`` when none is a mismatch, an error or skipped."""

    scenario: Scenario
    steps: tuple[StepResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.steps)

    @property
    def failures(self) -> list[StepResult]:
        return [r for r in self.steps if not r.ok]

    def summary(self) -> str:
        """A readable report: the scenario and one block per step."""
        head = f"scenario {self.scenario}: {'ok' if self.ok else 'FAILED'}"
        return "\n".join([head, *(f"  {r}" for r in self.steps)])

    def __str__(self) -> str:
        return self.summary()


class ScenarioPlayer:
    """Optoro's side of the guide's scenarios, against a bridge at ``bridge_url``.

    ``auth`` is how Optoro authenticates to the retailer: :class:`BasicAuth` credentials (or an
    ``aiohttp.BasicAuth``), or an API-key header as ``(name, value)``. ``api_version`` is the
    ``X-Optiturn-Api-Version`` of the RMA webhook (3 at Optoro); Exchange Variants and Exchange
    Orders are other APIs with their own versions, 1 and 1 in Optoro's catalog
    (:data:`DEFAULT_API_VERSIONS`); ``api_versions`` overrides any of them per step kind
    (``"rma"``, ``"exchange_variants"``, ``"exchange_order"``). ``variants_endpoint``
    replaces the last segment of the variants path (the guide also shows
    ``/sku/{id}/exchange_variants``); ``exchange_orders_path`` replaces the exchange-order
    path (``/orders`` in the samples, ``/exchange_orders`` in the guide's prose). The session
    is the caller's (not closed here).
    """

    def __init__(
        self,
        bridge_url: str,
        retailer: str,
        auth: Auth,
        optiturn_id: str,
        api_version: int,
        session: aiohttp.ClientSession,
        sandbox: OptoroSandbox | None = None,
        *,
        api_versions: Mapping[str, int] | None = None,
        outbound_timeout: float = 10.0,
        poll_interval: float = 0.02,
        request_timeout: float = 10.0,
        stop_on_failure: bool = False,
        variants_endpoint: str | None = None,
        exchange_orders_path: str | None = None,
        order_diff: Callable[[dict[str, Any], Any], list[str]] | None = None,
    ) -> None:
        self.base = f"{bridge_url.rstrip('/')}/retailers/{retailer}/optoro"
        self.auth = auth
        self.optiturn_id = optiturn_id
        self.api_versions = {
            **DEFAULT_API_VERSIONS,
            "rma": api_version,
            **(api_versions or {}),
        }
        self.session = session
        self.sandbox = sandbox
        self.outbound_timeout = outbound_timeout
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.stop_on_failure = stop_on_failure
        self.variants_endpoint = variants_endpoint
        self.exchange_orders_path = exchange_orders_path
        self.order_diff = order_diff or rpo_order_diff
        """How a received order is compared with the sample (differences, empty if equal)."""

    async def play(
        self, scenario: Scenario, *, on_outbound_step: OutboundHook | None = None
    ) -> ScenarioResult:
        """Walk every step of ``scenario`` in order; never raises for what the bridge does
        (exceptions of ``on_outbound_step`` propagate)."""
        cursors = self._cursors(scenario)
        results: list[StepResult] = []
        failed = False
        for step in scenario.steps:
            if failed and self.stop_on_failure:
                results.append(StepResult(step, "skipped", "an earlier step failed"))
                continue
            started = time.monotonic()
            if step.outbound:
                result = await self._outbound(step, cursors, on_outbound_step)
            else:
                result = await self._inbound(step)
            elapsed = time.monotonic() - started
            result = StepResult(
                result.step, result.status, result.detail, result.diff, result.http_status, elapsed
            )
            results.append(result)
            failed = failed or not result.ok
        return ScenarioResult(scenario, tuple(results))

    # Optoro -> bridge ----------------------------------------------------------------------

    def url_for(self, step: Step) -> str:
        """Where the step is sent on the bridge."""
        path = step.path
        if step.kind == "exchange_variants" and self.variants_endpoint:
            path = f"{path.rsplit('/', 1)[0]}/{self.variants_endpoint}"
        elif step.kind == "exchange_order" and self.exchange_orders_path:
            path = self.exchange_orders_path
        return f"{self.base}{path}"

    def headers_for(self, kind: StepKind) -> dict[str, str]:
        """The headers Optoro sends on a call of ``kind`` (API key included, if any)."""
        headers = {
            "X-Optiturn-Id": self.optiturn_id,
            "X-Optiturn-Api-Version": str(self.api_versions[kind]),
        }
        auth = self.auth
        if isinstance(auth, BasicAuth):
            headers["Authorization"] = auth.encode()
        elif isinstance(auth, aiohttp.BasicAuth):  # a tuple too: test it before ApiKey
            headers["Authorization"] = BasicAuth(auth.login, auth.password).encode()
        else:
            name, value = auth
            headers[name] = value
        return headers

    async def _inbound(self, step: Step) -> StepResult:
        kind = step.kind
        headers = self.headers_for(kind)
        data: bytes | None = None
        if step.method == "POST":
            headers["Content-Type"] = "application/json"
            data = json.dumps(step.request).encode()
        try:
            async with self.session.request(
                step.method,
                self.url_for(step),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return StepResult(step, "error", f"{type(exc).__name__}: {exc}")
        if kind == "rma":
            if 200 <= status < 300:
                return StepResult(step, "ok", http_status=status)
            return StepResult(step, "mismatch", f"expected 2xx, got: {_preview(text)}", (), status)
        if status != 200:
            return StepResult(step, "mismatch", f"expected 200, got: {_preview(text)}", (), status)
        if step.response is None:
            return StepResult(step, "ok", "the guide shows no response; body not compared", (), 200)
        try:
            answer = json.loads(text)
        except ValueError:
            return StepResult(step, "error", f"answer is not JSON: {_preview(text)}", (), 200)
        diff = json_diff(step.response, answer)
        if diff:
            return StepResult(step, "mismatch", "answer differs from the sample", tuple(diff), 200)
        return StepResult(step, "ok", http_status=200)

    # bridge -> Optoro ----------------------------------------------------------------------

    def _cursors(self, scenario: Scenario) -> dict[str, int]:
        """Per order identifier: versions already in the sandbox when ``play`` begins."""
        if self.sandbox is None:
            return {}
        return {
            order["identifier"]: len(self.sandbox.orders.get(order["identifier"], []))
            for step in scenario.steps
            for order in step.rpo_orders()
        }

    async def _outbound(
        self, step: Step, cursors: dict[str, int], hook: OutboundHook | None
    ) -> StepResult:
        sandbox = self.sandbox
        requests_before = len(sandbox.requests) if sandbox is not None else 0
        if hook is not None:
            await hook(step)
        if sandbox is None:
            return StepResult(step, "not_checked", "no sandbox given: outbound step not checked")
        expected = step.rpo_orders()
        pending = list(range(len(expected)))
        deadline = time.monotonic() + self.outbound_timeout
        while True:
            for i in list(pending):
                sample = expected[i]
                identifier = sample["identifier"]
                versions = sandbox.orders.get(identifier, [])
                for index in range(cursors.get(identifier, 0), len(versions)):
                    if not self.order_diff(sample, versions[index]):
                        cursors[identifier] = index + 1
                        pending.remove(i)
                        break
            if not pending:
                return StepResult(step, "ok")
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(self.poll_interval)
        return self._outbound_failure(step, expected, pending, cursors, requests_before)

    def _outbound_failure(
        self,
        step: Step,
        expected: list[dict[str, Any]],
        pending: list[int],
        cursors: dict[str, int],
        requests_before: int,
    ) -> StepResult:
        assert self.sandbox is not None
        sandbox = self.sandbox
        diff: list[str] = []
        missing: list[str] = []
        for i in pending:
            sample = expected[i]
            identifier = sample["identifier"]
            fresh = sandbox.orders.get(identifier, [])[cursors.get(identifier, 0) :]
            if fresh:
                diff.append(
                    f"order {identifier}: latest of {len(fresh)} version(s) received differs:"
                )
                diff.extend(f"  {line}" for line in self.order_diff(sample, fresh[-1]))
            else:
                missing.append(identifier)
        rejected = [
            r
            for r in sandbox.requests[requests_before:]
            if r.path == RPO_PATH and r.outcome not in ("accepted", "accepted_then_dropped")
        ]
        notes = []
        if missing:
            notes.append(
                f"no matching version of {', '.join(missing)} within {self.outbound_timeout:g}s"
            )
        if rejected:
            last = rejected[-1]
            errors = "; ".join(last.errors[:3])
            notes.append(
                f"the sandbox refused {len(rejected)} request(s) meanwhile, the last "
                f"{last.status} {last.outcome}" + (f": {errors}" if errors else "")
            )
        status: StepStatus = "error" if missing and not diff else "mismatch"
        return StepResult(step, status, "; ".join(notes) or "order differs", tuple(diff))


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_PREVIEW else text[: _BODY_PREVIEW - 3] + "..."
