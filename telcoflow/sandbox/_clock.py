"""The sandbox's 20 ms media clock, which every call follows.

Invariants: one timer for the whole sandbox, however many calls; each call is given a phase (one
of :attr:`MediaClock.phases` offsets within the 20 ms, round robin) and is woken once per tick of
its phase; a call that was slow catches up on the ticks it missed, and a clock that fell more
than :data:`MAX_CATCH_UP_S` behind skips ahead (and says so) instead of bursting.
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel

__all__ = ["MAX_CATCH_UP_S", "TICK_S", "MediaClock"]

logger = logging.getLogger("telcoflow.sandbox")

#: One tick: 20 ms, the protocol's frame (PROTOCOL.md).
TICK_S = 0.02
#: When the clock falls this far behind (a stalled machine), it skips ahead instead of bursting.
MAX_CATCH_UP_S = 1.0


class MediaClock:
    """The sandbox's 20 ms media clock, which every call follows.

    A timer per call cost a wake-up, a timer-heap entry and an ``epoll_wait`` per call per tick;
    this is one timer for all calls. Calls are spread over ``phases`` offsets within the 20 ms
    (round robin as they start), as calls placed at random moments would be on a real server:
    all calls on one instant would hand every client its frames in one burst per tick, which is
    cheaper for it than what it will meet in production. It ticks only while calls listen.
    """

    def __init__(self, phases: int = 4) -> None:
        self.phases = phases
        self._ticks = [0] * phases
        self._ticked = [anyio.Event() for _ in range(phases)]
        self._listeners = 0
        self._next_phase = 0
        self._wanted = anyio.Event()
        #: Ticks the clock skipped after falling too far behind (each listener missed them).
        self.skipped_ticks = 0
        #: How far behind real time the clock was at its last tick, in seconds.
        self.behind_s = 0.0
        self._warned_at = -60.0

    def listen(self) -> tuple[int, int]:
        """Start following the clock: returns the phase assigned and its current tick."""
        self._listeners += 1
        self._wanted.set()
        phase = self._next_phase
        self._next_phase = (phase + 1) % self.phases
        return phase, self._ticks[phase]

    def leave(self) -> None:
        self._listeners -= 1

    @property
    def listeners(self) -> int:
        """Calls following the clock now (a call that only rings does not)."""
        return self._listeners

    def warn(self, message: str) -> None:
        """A warning that the sandbox is overloaded: at most one every 10 s, whatever says it."""
        now = anyio.current_time()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            logger.warning("sandbox overloaded: %s (calls lose that much audio)", message)

    async def wait(self, phase: int, seen: int) -> int:
        """Wait for the phase's first tick after ``seen``; returns its current tick (more than
        one tick may have passed if the caller was slow: it catches up)."""
        while self._ticks[phase] <= seen:
            await self._ticked[phase].wait()
        return self._ticks[phase]

    async def run(self) -> None:
        """Tick every ``TICK_S / phases`` while there are listeners; skip ahead after a stall."""
        step = TICK_S / self.phases
        while True:
            if not self._listeners:
                self._wanted = anyio.Event()
                await self._wanted.wait()
            start = anyio.current_time()
            n = 0
            while self._listeners:
                n += 1
                now = anyio.current_time()
                delay = start + n * step - now
                self.behind_s = max(0.0, -delay)
                if delay > 0:
                    await anyio.sleep(delay)
                elif -delay > MAX_CATCH_UP_S:
                    skipped = int(-delay / TICK_S)
                    self.skipped_ticks += skipped
                    self.warn(
                        f"media clock {-delay:.1f} s behind; {skipped * TICK_S:.1f} s skipped"
                    )
                    start, n = anyio.current_time(), 0
                    continue
                phase = n % self.phases
                self._ticks[phase] += 1
                ticked, self._ticked[phase] = self._ticked[phase], anyio.Event()
                ticked.set()
                if delay <= 0:
                    await anyio.lowlevel.checkpoint()  # behind: still let the calls run
