"""A call's outbound audio: the send buffer, the server's credit, and what it has played.

Invariants:

- **in order, within credit**: audio leaves in the order it was queued, cut into frames no
  larger in total than the credit the server granted (the protocol object counts it). Only the
  holder of the *send turn* cuts frames and hands them to the connection, so frames cannot
  overtake one another whatever the connection does before it queues them. The sender task
  holds the turn unless someone else does: ``send`` takes it while the sender is parked (it
  then writes from the caller's task, one task switch less per frame) and ``clear`` takes it
  until the interruption has left; ``held`` counts them, and while it is not 0 the sender and
  other callers only queue. Whoever gives the turn back wakes the sender if audio is waiting.
- **bounded**: the buffer holds ``capacity`` bytes at most; ``send`` raises past it, or waits.
- **playout from credit**: the server's playout buffer holds the largest credit it ever granted
  at once, so that minus the credit left is what it still has to play, and every grant beyond
  that first buffer's worth is room that playing freed (less what ``clear`` interrupted).
- **closed is final**: once :meth:`AudioOut.close` has run nothing is queued or sent, and every
  task waiting here is released.

A :class:`~telcoflow._net.Pulse` wakes only the tasks waiting when it fires: every wait below
checks its condition right before waiting, with no checkpoint in between.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.lowlevel

from .._core import MediaProtocol
from .._net import ConnectionClosed, Pulse, WebSocketConnection
from ..exceptions import BufferClosedError, BufferFullError
from ._records import CallStats

__all__ = ["MAX_FRAMES_PER_WRITE", "AudioOut"]

#: Frames per socket write at most: 1 s of 20 ms frames, so a burst of credit is sent in a few
#: writes, and a server asking for tiny frames cannot stall the event loop with one huge write.
MAX_FRAMES_PER_WRITE = 50


class AudioOut:
    """The audio one call sends: queued by the application, sent as the server grants credit."""

    __slots__ = (
        "_call_id",
        "_conn",
        "_dropped",
        "_granted",
        "_playout",
        "_proto",
        "_stats",
        "buf",
        "capacity",
        "closed",
        "held",
        "idle",
        "progress",
    )

    def __init__(
        self,
        call_id: str,
        proto: MediaProtocol,
        conn: WebSocketConnection,
        stats: CallStats,
        capacity: int,
    ) -> None:
        self._call_id = call_id
        self._proto = proto
        self._conn = conn
        self._stats = stats
        #: Audio queued and not yet sent.
        self.buf = bytearray()
        #: The most ``buf`` holds (``send_buffer_bytes``).
        self.capacity = capacity
        #: Holders of the send turn other than the sender (see the module's docstring).
        self.held = 0
        #: Fired to wake the sender task while it waits for audio, credit or the turn.
        self.idle = Pulse()
        #: Fired when audio was sent or played, or the call ended.
        self.progress = Pulse()
        self.closed = False
        # Playout accounting (see the module's docstring): the server's playout buffer size, the
        # credit granted in all, and the bytes interrupted.
        self._playout = 0
        self._granted = 0
        self._dropped = 0

    # --- queueing (the application's tasks) ------------------------------------------------------

    async def send(self, pcm: bytes, wait: bool) -> None:
        """``ActiveCall.send_audio``: queue ``pcm``, and send what credit allows at once when the
        sender is parked."""
        if self.closed:
            raise BufferClosedError(f"call {self._call_id} has ended; audio not queued")
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise TypeError(f"audio must be bytes of PCM16, not {type(pcm).__name__}")
        n = len(pcm)
        if n & 1:
            raise ValueError(f"audio of {n} bytes is not whole 16-bit samples (odd length)")
        buf = self.buf
        queued = len(buf)
        if queued + n <= self.capacity:
            buf += pcm
            if self.held or not self.idle.waited_on:
                return  # the sender, or whoever holds the turn, sends it
            # The sender is parked: take the turn and send from this task rather than wake it.
            # (The sender is sent for below, not here, so that the frames of this write leave
            # before any it would cut.)
            self.held += 1
            try:
                frames = self._proto.take_audio(buf, MAX_FRAMES_PER_WRITE)
                if frames:
                    # _send_frames inlined: the hot path of every call's audio.
                    try:
                        await self._conn.send_many(frames)
                    except ConnectionClosed:
                        return  # the reader sees the connection end and terminates the call
                    self._stats.bytes_sent += sum(len(f) for f in frames) - len(frames)
                    self.progress.fire()
            finally:
                self.held -= 1
                if buf and not self.held:
                    self.idle.fire()  # more than one write's worth, or not enough credit
            return
        if not wait:
            raise BufferFullError(
                f"call {self._call_id}: {n} bytes do not fit in the send buffer "
                f"({queued} of {self.capacity} bytes queued)"
            )
        view = memoryview(pcm)
        pos = 0
        while pos < n:
            if self.closed:
                raise BufferClosedError(
                    f"call {self._call_id} ended with {n - pos} bytes of audio not queued"
                )
            room = (self.capacity - len(buf)) & ~1
            if room <= 0:
                await self.progress.wait()
                continue
            take = min(room, n - pos)
            buf += view[pos : pos + take]
            pos += take
            self.idle.fire()

    def clear(self) -> Callable[[], None]:
        """Drop the audio queued and hold the turn (nothing is sent) until the returned function
        is called: ``clear_send_audio_buffer`` calls it once the interruption has left, so that
        no audio queued after the clear reaches the server before it. Calling it again is a
        no-op."""
        self.buf.clear()
        self._dropped += self.playout_pending_bytes
        self.progress.fire()
        self.held += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held -= 1
                if self.buf and not self.held:
                    self.idle.fire()

        return release

    def close(self) -> None:
        """The call is over: drop what is queued, send nothing more, release every waiter."""
        self.closed = True
        self.buf.clear()
        self.idle.fire()
        self.progress.fire()

    # --- the sender ------------------------------------------------------------------------------

    async def send_loop(self) -> None:
        """The sender task: send what is queued as credit allows, until the call ends."""
        proto, buf, idle, conn = self._proto, self.buf, self.idle, self._conn
        while not self.closed and conn.closed is None:
            if self.held:
                await idle.wait()  # not our turn: the holder wakes us when it gives it back
                continue
            frames = proto.take_audio(buf, MAX_FRAMES_PER_WRITE)
            if not frames:
                await idle.wait()
                continue
            await self._send_frames(frames)
            if len(frames) == MAX_FRAMES_PER_WRITE:
                await anyio.lowlevel.checkpoint()  # more to send: let other tasks run first

    async def _send_frames(self, frames: list[bytes]) -> None:
        try:
            await self._conn.send_many(frames)
        except ConnectionClosed:
            return  # the reader sees the connection end and terminates the call
        self._stats.bytes_sent += sum(len(f) for f in frames) - len(frames)
        self.progress.fire()

    def credit_granted(self, requested_bytes: int) -> None:
        """The server granted credit (the protocol object has added it): account for playout
        and wake the sender if audio waits for it."""
        self._granted += requested_bytes
        self._playout = max(self._playout, self._proto.credit)
        if self.buf:
            self.idle.fire()
        self.progress.fire()

    # --- playback position -----------------------------------------------------------------------

    @property
    def playout_pending_bytes(self) -> int:
        """Audio the server holds and has not played yet."""
        return max(0, self._playout - self._proto.credit)

    @property
    def played_bytes(self) -> int:
        """Audio the server has played so far (interrupted audio not counted)."""
        return max(0, self._granted - self._playout - self._dropped)

    async def wait_played(self) -> None:
        """Until everything queued so far has been played, or the call ended."""
        while not self.closed and (self.buf or self.playout_pending_bytes):
            await self.progress.wait()

    async def wait_played_bytes(self, n: int) -> bool:
        """Until :attr:`played_bytes` reaches ``n``; False if the call ended first."""
        while self.played_bytes < n:
            if self.closed:
                return False
            await self.progress.wait()
        return True
