"""A call's events: the handlers registered for them and the ordered channel to their dispatcher.

Invariant: every event emitted before :meth:`CallEvents.close` reaches its handlers exactly once,
in the order emitted, one handler at a time: emitting never blocks nor runs a handler (an
unbounded channel; a call emits a handful of events), and one task, :meth:`CallEvents.dispatch`,
runs them all. An event emitted after ``close`` is dropped (logged at DEBUG). ``delivered`` is
set once the dispatcher has stopped, having run every event emitted (or been cancelled).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .. import events
from .._handlers import HandlerRegistry

__all__ = ["CallEvents"]


class CallEvents:
    """The handler registry of one call and the channel of its events, in order."""

    __slots__ = ("_context", "_logger", "_receive", "_send", "delivered", "handlers")

    def __init__(self, context: str, logger: logging.Logger) -> None:
        #: How log lines name the call (``"call <id>"``).
        self._context = context
        self._logger = logger
        self.handlers = HandlerRegistry((e.value for e in events.CallEvent), "call")
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](math.inf)
        #: Set once the dispatcher has stopped.
        self.delivered = anyio.Event()

    def emit(self, name: str, payload: Any) -> None:
        """Queue an event for the handlers (never blocks)."""
        try:
            self._send.send_nowait((name, payload))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._logger.debug("%s: %s after the dispatcher stopped", self._context, name)

    def close(self) -> None:
        """No more events: the dispatcher stops once it has run those emitted so far."""
        self._send.close()

    def abort(self) -> None:
        """The dispatcher is gone (its task group ended): drop what it did not run."""
        self._receive.close()

    async def dispatch(self, on_error: Callable[[Exception], Awaitable[bool]]) -> None:
        """Run the handlers of each event in turn until :meth:`close` (the dispatcher task)."""
        try:
            async with self._receive:
                async for name, payload in self._receive:
                    await self.handlers.fire(name, payload, self._logger, self._context, on_error)
        finally:
            self.delivered.set()
