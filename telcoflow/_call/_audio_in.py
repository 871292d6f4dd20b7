"""A call's inbound audio: one bounded queue per channel the agent reads, drained by
``audio_stream()``.

Invariants:

- **whole samples, in order**: audio is a byte stream and a server may cut frames anywhere, so a
  channel's trailing odd byte is kept and put in front of its next frame;
- **bounded, drop oldest**: a queue holds ``audio_queue_chunks`` chunks and that many 20 ms
  frames' worth of bytes at most; past either, the oldest audio is dropped and counted (a slow
  consumer loses the past, never stalls the connection's reader);
- **closing keeps what is queued**: audio heard before the call ended is still delivered, then
  iteration ends; audio arriving after is dropped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

from .._core import CHANNEL_CALLEE, CHANNEL_CALLER, CHANNEL_MIXED, AudioFrame, AudioMode
from .._net import Pulse
from ._records import CallStats

__all__ = ["AudioIn"]

logger = logging.getLogger("telcoflow_sdk.media_connection")

_LEGS: dict[str, int] = {"mixed": CHANNEL_MIXED, "caller": CHANNEL_CALLER, "callee": CHANNEL_CALLEE}


class _AudioQueue:
    """Inbound audio of one channel: a ``deque`` bounded in chunks (its ``maxlen``) and in
    bytes; when full, the oldest audio is dropped."""

    __slots__ = ("_bytes", "_chunks", "_max_bytes", "_pulse", "closed")

    def __init__(self, max_chunks: int, max_bytes: int) -> None:
        self._chunks: deque[bytes] = deque(maxlen=max_chunks)
        self._bytes = 0
        self._max_bytes = max_bytes
        self._pulse = Pulse()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._pulse.fire()

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def put(self, chunk: bytes) -> int:
        """Queue ``chunk``; returns the bytes of older audio dropped to make room (0 if none;
        once closed, the chunk itself is dropped)."""
        if self.closed:
            return len(chunk)
        chunks = self._chunks
        # A full deque drops its oldest chunk on append: count it first (maxlen >= 1).
        dropped = len(chunks[0]) if len(chunks) == chunks.maxlen else 0
        chunks.append(chunk)
        self._bytes += len(chunk) - dropped
        while self._bytes > self._max_bytes and len(chunks) > 1:
            old = chunks.popleft()
            self._bytes -= len(old)
            dropped += len(old)
        self._pulse.fire()
        return dropped

    async def get(self) -> bytes | None:
        """The next chunk, or None once the queue is closed and empty."""
        while not self._chunks:
            if self.closed:
                return None
            await self._pulse.wait()  # put() fires it: checked just above, no checkpoint between
        chunk = self._chunks.popleft()
        self._bytes -= len(chunk)
        return chunk


class _AudioStream:
    """``async for chunk in call.audio_stream()``: ends when the call ends for the agent."""

    __slots__ = ("_queue",)

    def __init__(self, queue: _AudioQueue) -> None:
        self._queue = queue

    def __aiter__(self) -> _AudioStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class AudioIn:
    """The audio one call receives, by channel: ``mixed`` only, or with ``isolated`` audio the
    caller's and the callee's legs too."""

    __slots__ = ("_call_id", "_mode", "_odd", "_stats", "queues")

    def __init__(
        self, call_id: str, mode: AudioMode, stats: CallStats, *, max_chunks: int, max_bytes: int
    ) -> None:
        self._call_id = call_id
        self._mode = mode
        self._stats = stats
        channels = (
            (CHANNEL_MIXED, CHANNEL_CALLER, CHANNEL_CALLEE)
            if mode is AudioMode.ISOLATED
            else (CHANNEL_MIXED,)
        )
        self.queues: dict[int, _AudioQueue] = {
            c: _AudioQueue(max_chunks, max_bytes) for c in channels
        }
        #: A trailing odd byte of a channel's last frame, kept for its next (audio is a stream).
        self._odd: dict[int, bytes] = {}

    @property
    def buffered_bytes(self) -> int:
        """Audio received and not yet taken, in bytes (all channels)."""
        return sum(q.buffered_bytes for q in self.queues.values())

    def stream(self, leg: Literal["mixed", "caller", "callee"] | None) -> AsyncIterator[bytes]:
        """``ActiveCall.audio_stream``: the audio of ``leg`` (by default the caller's leg in
        ``isolated`` mode, else the mix)."""
        if leg is None:
            leg = "caller" if self._mode is AudioMode.ISOLATED else "mixed"
        channel = _LEGS.get(leg)
        queue = None if channel is None else self.queues.get(channel)
        if queue is None:
            raise ValueError(f"no {leg!r} audio in {self._mode.value} audio mode")
        return _AudioStream(queue)

    def close(self) -> None:
        """The call is over: each stream ends once it has delivered what is queued."""
        for queue in self.queues.values():
            queue.close()

    def frame(self, frame: AudioFrame) -> None:
        """An audio frame arrived (the read loop's hot path): queue its whole samples."""
        stats = self._stats
        channel = frame.channel
        queue = self.queues.get(channel)
        if queue is None:
            stats.ignored_frames += 1
            return
        pcm = frame.pcm
        stats.frames_received += 1
        stats.bytes_received += len(pcm)
        odd = self._odd
        if odd or len(pcm) & 1:
            # Audio is a byte stream: a server may cut frames anywhere, and whole samples must
            # reach the application.
            pcm = odd.pop(channel, b"") + pcm
            if len(pcm) & 1:
                odd[channel] = pcm[-1:]
                pcm = pcm[:-1]
            if not pcm:
                return
        dropped = queue.put(pcm)
        if dropped:
            stats.dropped_inbound_chunks += 1
            stats.dropped_inbound_bytes += dropped
            if stats.dropped_inbound_chunks % 500 == 1:
                logger.warning(
                    "call %s: inbound audio not consumed; dropped %d oldest chunks so far",
                    self._call_id,
                    stats.dropped_inbound_chunks,
                )
