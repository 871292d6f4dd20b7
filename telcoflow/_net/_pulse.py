"""``Pulse``: wake whoever waits now, and cost nothing when nobody does.

Made for per-frame signals (a write done, audio played, audio queued). Under asyncio a wait is
one future of the loop's own, kept in a list that :meth:`Pulse.fire` completes: an
``anyio.Event`` there is an ``asyncio.Event`` whose every wait looks the running loop up again,
which costs a ``getpid()`` system call (CPython checks for a fork), 4 % of a busy client's
samples. So a pulse remembers the loop of its first wait and is bound to it, as asyncio's own
primitives are to theirs. Under trio (and any other backend) it waits on an ``anyio.Event``
made only when a task waits.

Cancellation is the backend's: a waiter cancelled by a cancel scope takes its own future out
of the list and leaves the others waiting.
"""

from __future__ import annotations

import asyncio

import anyio
import sniffio

__all__ = ["Pulse"]


class Pulse:
    """Tasks wait for the next :meth:`fire`; a fire with no waiter is free."""

    __slots__ = ("_event", "_loop", "_waiters")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def waited_on(self) -> bool:
        """True while some task waits for the next fire."""
        return bool(self._waiters) or self._event is not None

    async def wait(self) -> None:
        """Wait for the next :meth:`fire`."""
        loop = self._loop
        if loop is None and sniffio.current_async_library() == "asyncio":
            loop = self._loop = asyncio.get_running_loop()
        if loop is None:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
            return
        future = loop.create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            try:  # cancelled (a fire hands out a fresh list): leave the others waiting
                self._waiters.remove(future)
            except ValueError:
                pass

    def fire(self) -> None:
        """Wake every task waiting now."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        event = self._event
        if event is not None:
            self._event = None
            event.set()
