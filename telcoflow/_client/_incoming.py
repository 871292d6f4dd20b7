"""Handing calls to the application: the ``INCOMING_CALL`` handlers' turn, and the iterators of
:meth:`TelcoflowClient.incoming_calls`.

Invariants:

- **in the order notified**: media connections of the calls notified open concurrently and
  finish in any order, yet the application gets the calls in the order they rang. A call waits
  for those notified before it to be handed over or given up (in its handler's task: its media
  is served meanwhile), but :data:`HANDOFF_ORDER_WAIT` at most, so that a call whose media is
  slow to open, or never opens, holds the ones after it back only briefly;
- **each call once to each iterator** open when it is handed over; an iterator holds
  :data:`MAX_PENDING_INCOMING` calls at most, and skips a call that ended before it was taken;
- **closing ends every iterator**: it delivers the calls it holds that are still active, then
  stops.
"""

from __future__ import annotations

from collections import deque

import anyio

from ..call import ActiveCall

__all__ = ["HANDOFF_ORDER_WAIT", "MAX_PENDING_INCOMING", "Handoff", "IncomingCalls"]

#: How long a call waits for calls notified before it to be handed to the application first.
#: Without the wait, two calls notified back to back could reach the application swapped
#: (test_calls_reach_the_application_in_the_order_offered); with no bound, one whose media
#: never opens would hold every later call back until its claim or its media times out.
HANDOFF_ORDER_WAIT = 0.5

#: Calls taken and not yet consumed from :meth:`TelcoflowClient.incoming_calls`; past this the
#: consumer is not keeping up.
MAX_PENDING_INCOMING = 1000


class IncomingCalls:
    """``async for call in client.incoming_calls():``, an alternative to the ``INCOMING_CALL``
    decorator. Ends when the client disconnects; calls the loop has not taken by then are left
    to the client's shutdown."""

    # Not an anyio memory stream (review 7.8): its receive end warns (ResourceWarning) when it
    # is dropped unclosed, and ``await client.incoming_calls().__anext__()`` (take one call)
    # is a fair use; nor does a stream skip the calls that ended while queued.

    def __init__(self) -> None:
        self._calls: deque[ActiveCall] = deque()
        self._changed = anyio.Event()
        self._closed = False

    def _offer(self, call: ActiveCall) -> bool:
        if self._closed or len(self._calls) >= MAX_PENDING_INCOMING:
            return False
        self._calls.append(call)
        self._changed.set()
        return True

    def _close(self) -> None:
        self._closed = True
        self._changed.set()

    def __aiter__(self) -> IncomingCalls:
        return self

    async def __anext__(self) -> ActiveCall:
        while True:
            while self._calls:
                call = self._calls.popleft()
                if call.is_active:
                    return call
            if self._closed:
                raise StopAsyncIteration
            # Checked just above, no checkpoint between: an offer sets the event waited on.
            self._changed = anyio.Event()
            await self._changed.wait()


class Handoff:
    """The order calls are handed to the application in, and the iterators they go to.

    Keyed by whatever the client tracks a notified call by (its session record)."""

    __slots__ = ("_changed", "_iterators", "_waiting")

    def __init__(self) -> None:
        #: Calls notified and not yet handed over (nor given up), in the order notified.
        self._waiting: list[object] = []
        self._changed = anyio.Event()
        self._iterators: list[IncomingCalls] = []

    def expect(self, key: object) -> None:
        """A call was notified: the calls notified after it go after it."""
        self._waiting.append(key)

    def done(self, key: object) -> None:
        """``key``'s call was handed over, or never will be: the calls after it may go."""
        if key in self._waiting:
            self._waiting.remove(key)
            changed, self._changed = self._changed, anyio.Event()
            changed.set()

    async def wait_turn(self, key: object) -> None:
        """Wait until the calls notified before ``key``'s are handed over or given up (for
        :data:`HANDOFF_ORDER_WAIT` at most); then it is handed over."""
        with anyio.move_on_after(HANDOFF_ORDER_WAIT):
            while key in self._waiting and self._waiting[0] is not key:
                await self._changed.wait()
        self.done(key)

    def subscribe(self) -> IncomingCalls:
        """A new iterator of the calls handed over from now on."""
        iterator = IncomingCalls()
        self._iterators.append(iterator)
        return iterator

    def offer(self, call: ActiveCall) -> int:
        """Give ``call`` to every iterator; how many refused it (full: not keeping up)."""
        return sum(not iterator._offer(call) for iterator in self._iterators)

    def close(self) -> None:
        """The client stops: every iterator ends once it has delivered what it holds."""
        for iterator in self._iterators:
            iterator._close()
        self._iterators.clear()
