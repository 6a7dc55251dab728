"""A faithful fake of Optoro on loopback, and the guide's scenarios to play against the bridge.

- :class:`OptoroSandbox`, :func:`make_app`, :func:`running_sandbox`, :func:`serve_forever`:
  Optoro's OAuth token endpoint and Returns Portal Orders API with fault knobs
  (``python -m adapters.optoro.sandbox --port 8089`` serves one alone).
- :func:`load_scenarios`: the 22 scenarios (118 steps) of Optoro's integration guide.
- :class:`ScenarioPlayer`: plays a scenario against a running bridge the way Optoro would
  (RMA webhooks, exchange variants and exchange orders) and checks, through the sandbox, the
  Returns Portal Orders the bridge sends.
- :mod:`~adapters.optoro.sandbox.compare`: the normalised comparison with the guide's samples.
"""

from __future__ import annotations

from adapters.optoro.sandbox.compare import (
    conforming_rpo_order,
    expected_rpo_order,
    json_diff,
    rpo_order_diff,
    rpo_request,
)
from adapters.optoro.sandbox.player import (
    DEFAULT_API_VERSIONS,
    ApiKey,
    BasicAuth,
    ScenarioPlayer,
    ScenarioResult,
    StepResult,
)
from adapters.optoro.sandbox.scenarios import Scenario, Step, load_scenarios, scenario
from adapters.optoro.sandbox.server import (
    API_VERSION,
    KNOBS,
    RPO_PATH,
    TOKEN_PATH,
    Knobs,
    OptoroSandbox,
    RecordedRequest,
    make_app,
    running_sandbox,
    serve,
    serve_forever,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_API_VERSIONS",
    "KNOBS",
    "RPO_PATH",
    "TOKEN_PATH",
    "ApiKey",
    "BasicAuth",
    "Knobs",
    "OptoroSandbox",
    "RecordedRequest",
    "Scenario",
    "ScenarioPlayer",
    "ScenarioResult",
    "Step",
    "StepResult",
    "conforming_rpo_order",
    "expected_rpo_order",
    "json_diff",
    "load_scenarios",
    "make_app",
    "rpo_order_diff",
    "rpo_request",
    "running_sandbox",
    "scenario",
    "serve",
    "serve_forever",
]
