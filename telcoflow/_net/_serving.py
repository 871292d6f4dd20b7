"""The lifecycle every server here shares (the sandbox, the voice-model stand-ins).

``async with server:`` starts it, leaving the block (or :meth:`Serving.aclose`) stops it.
Invariants:

- everything a server starts (listener, task group, temporary files) is entered on one
  ``AsyncExitStack`` by its :meth:`Serving._start`, and unwound last in, first out when it stops;
- a start that fails part-way unwinds what it had started, and re-raises;
- stopping is idempotent, and a running server cannot be started a second time;
- a listener is closed even while the server is being cancelled (:func:`close_listener`).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

__all__ = ["Serving", "close_listener"]

_S = TypeVar("_S", bound="Serving")


class Serving:
    """Base of a server that runs inside ``async with`` (see the module for its invariants)."""

    _stack: AsyncExitStack | None = None

    @property
    def running(self) -> bool:
        """True between a successful start and the stop."""
        return self._stack is not None

    async def _start(self, stack: AsyncExitStack) -> None:
        """Start serving; enter on ``stack`` whatever must be undone to stop."""
        raise NotImplementedError

    async def __aenter__(self: _S) -> _S:
        if self._stack is not None:
            raise RuntimeError(f"this {type(self).__name__} is already running")
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving: undo everything started, last first. Idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


async def close_listener(listener: anyio.abc.Listener[Any]) -> None:
    """Close ``listener`` even while the server is being cancelled."""
    with anyio.CancelScope(shield=True):
        await listener.aclose()
