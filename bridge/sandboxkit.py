"""What every platform sandbox shares: validated fault knobs and a serve-until-stopped loop.

A sandbox keeps its settings in a pydantic model (``knobs_model``); its knobs read and
write as attributes (validated on assignment), ``configure(**knobs)`` sets several at
once or none, and setting ``seed`` reseeds the sandbox's ``rng`` so that a run repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

S = TypeVar("S")


def describe_problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


class KnobbedState:
    """Base of a sandbox's state object. Subclasses set ``knobs_model`` and, in
    ``__init__``, ``object.__setattr__(self, "_knobs", self.knobs_model(**knobs))``."""

    knobs_model: ClassVar[type[BaseModel]]

    @classmethod
    def knob_names(cls) -> tuple[str, ...]:
        return tuple(cls.knobs_model.model_fields)

    def __getattr__(self, name: str) -> Any:
        # only called for names not found normally: the knobs
        if name in type(self).knobs_model.model_fields:
            return getattr(self.__dict__["_knobs"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).knobs_model.model_fields:
            setattr(self.__dict__["_knobs"], name, value)  # validated: pydantic ValidationError
            if name == "seed" and "rng" in self.__dict__:
                self.__dict__["rng"].seed(value)
        else:
            object.__setattr__(self, name, value)

    def configure(self, **knobs: Any) -> None:
        """Set several knobs at once, all or none (``ValueError`` names every problem)."""
        names = self.knob_names()
        unknown = sorted(set(knobs) - set(names))
        if unknown:
            raise ValueError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(names)}")
        try:
            checked = type(self).knobs_model(**{**self.__dict__["_knobs"].model_dump(), **knobs})
        except ValidationError as exc:
            raise ValueError(describe_problems(exc)) from None
        for name in knobs:
            setattr(self, name, getattr(checked, name))


async def serve_until_stopped(
    running: Callable[..., AbstractAsyncContextManager[S]],
    banner: Callable[[S], list[str]],
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    **knobs: Any,
) -> None:
    """Run ``running(host, port, **knobs)`` until ``stop`` is set or SIGINT/SIGTERM,
    printing ``banner(sandbox)`` once it listens."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with running(host, port, **knobs) as sandbox:
            for line in banner(sandbox):
                print(line, flush=True)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) until the block ends; yields its URL."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        await runner.cleanup()
