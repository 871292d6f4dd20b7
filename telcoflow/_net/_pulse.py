"""``Pulse``: wake whoever waits now, and cost nothing when nobody does."""

from __future__ import annotations

import anyio

__all__ = ["Pulse"]


class Pulse:
    """Tasks wait for the next :meth:`fire`; a fire with no waiter is free.

    Made for per-frame signals (a write done, audio played, audio queued): an ``anyio.Event``
    made afresh after every set would cost one object per frame; this one makes an event only
    when a task waits.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    @property
    def waited_on(self) -> bool:
        """True while some task waits for the next fire."""
        return self._event is not None

    async def wait(self) -> None:
        """Wait for the next :meth:`fire`."""
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def fire(self) -> None:
        """Wake every task waiting now."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()
