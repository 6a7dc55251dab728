"""A faithful fake of ReturnLogic on loopback.

- :class:`ReturnLogicSandbox`, :func:`make_app`, :func:`running_sandbox`, :func:`serve_forever`:
  OAuth code and refresh grants, bearer auth, both rate windows, orders, products, RMAs and
  webhook registrations with unreliable delivery, and fault knobs
  (``python -m adapters.returnlogic.sandbox --port 8090 --orders 1000 --seed 1`` serves one
  alone).
- :mod:`~adapters.returnlogic.sandbox.data`: deterministic records (``generate``) and the RMA
  workflow.
- :mod:`~adapters.returnlogic.sandbox.windows`: the sliding rate windows and what they observed.
"""

from __future__ import annotations

from adapters.returnlogic.sandbox.data import DEFAULT_ANCHOR, WORKFLOW_PATH, WORKFLOW_STATUSES
from adapters.returnlogic.sandbox.queries import ValidateError
from adapters.returnlogic.sandbox.server import (
    AUTHORIZE_PATH,
    CONTROL_PREFIX,
    DEFAULT_TEAM,
    KNOBS,
    OAUTH_PATH,
    RESOURCE_ACTIONS,
    SANDBOX_KEY,
    Delivery,
    Knobs,
    RecordedRequest,
    Registration,
    ReturnLogicSandbox,
    TeamData,
    WebhookEvent,
    make_app,
    running_sandbox,
    serve,
    serve_forever,
    webhook_payload,
)

__all__ = [
    "AUTHORIZE_PATH",
    "CONTROL_PREFIX",
    "DEFAULT_ANCHOR",
    "DEFAULT_TEAM",
    "KNOBS",
    "OAUTH_PATH",
    "RESOURCE_ACTIONS",
    "SANDBOX_KEY",
    "WORKFLOW_PATH",
    "WORKFLOW_STATUSES",
    "Delivery",
    "Knobs",
    "RecordedRequest",
    "Registration",
    "ReturnLogicSandbox",
    "TeamData",
    "ValidateError",
    "WebhookEvent",
    "make_app",
    "running_sandbox",
    "serve",
    "serve_forever",
    "webhook_payload",
]
