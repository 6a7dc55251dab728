"""A faithful fake of Kibo OMS returns on loopback (``python -m adapters.kibo.sandbox``).

:class:`KiboSandbox` (state and knobs), :func:`make_app`, :func:`running_sandbox`,
:func:`serve`, :func:`serve_forever`: Create, Get and Process Return with schema validation,
bearer or Basic auth, fault knobs (errors, latency, refusals, a create committed but never
answered) and Return Event Notifications sent to a configured URL (or dropped). See
:mod:`adapters.kibo.sandbox.server` for the behaviour and what is invented, and
:mod:`adapters.kibo.sandbox.schema` for the schema as rebuilt from Kibo's page.
"""

from __future__ import annotations

from adapters.kibo.sandbox.schema import PROCESS_SCHEMA, RETURN_SCHEMA, validate
from adapters.kibo.sandbox.server import (
    ACTIONS,
    DEFAULT_WIRE_EVENT_NAMES,
    FIRST_RETURN_ID,
    KNOBS,
    PROCESS_PATH,
    RETURN_PATH,
    KiboSandbox,
    Knobs,
    RecordedRequest,
    SandboxRefused,
    SentNotification,
    make_app,
    running_sandbox,
    serve,
    serve_forever,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_WIRE_EVENT_NAMES",
    "FIRST_RETURN_ID",
    "KNOBS",
    "PROCESS_PATH",
    "PROCESS_SCHEMA",
    "RETURN_PATH",
    "RETURN_SCHEMA",
    "KiboSandbox",
    "Knobs",
    "RecordedRequest",
    "SandboxRefused",
    "SentNotification",
    "make_app",
    "running_sandbox",
    "serve",
    "serve_forever",
    "validate",
]
