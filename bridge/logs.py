"""JSON logs with structured fields; secrets are redacted at the sink.

Redaction happens where text leaves the process (:class:`JsonFormatter`), for messages,
extra fields and tracebacks alike:

* values under secret-looking keys (``secret``, ``password``, ``token``, ``authorization``,
  ``api_key``, ``cookie``; and ``code`` exactly, an OAuth code) and ``SecretStr`` values;
* credentials in text: ``Bearer``/``Basic`` values, quoted ``"client_secret": "..."`` or
  ``'code': '...'`` pairs (JSON, reprs), ``key=``/``token=``/``code=`` query parameters;
* every secret the process knows by value: configuration ``SecretStr`` values and tokens
  obtained at runtime are registered (:func:`register_secret`) and replaced wherever they
  appear, whatever the text around them.

A crash goes through the same sink: :func:`configure_logging` installs ``sys.excepthook``
and ``threading.excepthook``, and :func:`install_loop_handler` the asyncio loop's exception
handler, so an uncaught exception is one redacted JSON line, never Python's raw traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import BaseModel, SecretStr

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_KEY = re.compile(r"(secret|password|token|authorization|api[-_]?key|cookie)", re.I)
_SECRET_EXACT_KEYS = frozenset({"code"})  # an OAuth authorization code
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?<![\w-])(["']?(?:[\w-]*(?:secret|password|token|api[-_]?key|authorization|cookie)[\w-]*|code)["']?
    \s*[:=]\s*)
    (["'])(?:(?!\2).)*\2
    """
)
_SECRET_PARAM = re.compile(r"(?i)([?&](?:key|token|access_token|code|secret)=)[^&#\s'\"]+")
REDACTED = "[redacted]"
_MIN_SECRET = 6
_known: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Redact ``value`` wherever it appears in what the process logs (short values, under
    six characters, are left to the key and pattern rules: they would redact plain words)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= _MIN_SECRET:
        _known.add(value)


def register_secrets_of(model: BaseModel) -> int:
    """Register every ``SecretStr`` inside a configuration model; returns how many."""
    found = 0
    for value in _walk(model):
        register_secret(value)
        found += 1
    return found


def _walk(value: Any) -> Iterable[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk(item)


def redact_text(text: str) -> str:
    """``text`` with credentials and every registered secret replaced."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys and credentials replaced."""
    if key and (_SECRET_KEY.search(key) or key.lower() in _SECRET_EXACT_KEYS):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if hasattr(value, "get_secret_value"):
        return REDACTED
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=lambda v: redact_text(str(v)))


_crash_log = logging.getLogger("bridge.crash")


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _crash_log.critical("uncaught exception", exc_info=(kind, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    _crash_log.critical(
        "uncaught exception in a thread",
        extra={"thread": args.thread.name if args.thread else None},
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _loop_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    task = context.get("task") or context.get("future")
    name = task.get_name() if isinstance(task, asyncio.Task) else None
    message = str(context.get("message") or "unhandled error in the event loop")
    if isinstance(exc, BaseException):
        _crash_log.error(message, extra={"task": name}, exc_info=exc)
    else:
        _crash_log.error(message, extra={"task": name})


def install_loop_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Route the loop's unhandled errors (a task's exception never retrieved, a callback
    that raised) through the redacting log sink."""
    (loop or asyncio.get_running_loop()).set_exception_handler(_loop_handler)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
