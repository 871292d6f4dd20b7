"""The audio format and the binary frame layout, shared by every sender and receiver.

PROTOCOL.md, "Audio format" and "Media plane": raw PCM16 little-endian mono at 8, 16 or 24 kHz,
carried in binary WebSocket frames whose first byte is a channel id and whose rest is PCM. This
module is the one place that layout is written down: the client's sender, the sandbox's media
clock and the test servers all build frames with :func:`encode_audio`.

Invariants:

- a frame is ``bytes((channel,)) + pcm``; ``channel`` fits in one byte;
- the agent sends on :data:`CHANNEL_MIXED` only; the server sends what the agent hears on
  channel 0 and, in isolated mode, each human leg on 1 (caller) and 2 (callee) as well.
"""

from __future__ import annotations

__all__ = [
    "CHANNEL_CALLEE",
    "CHANNEL_CALLER",
    "CHANNEL_MIXED",
    "FRAME_MS",
    "SAMPLE_RATES",
    "encode_audio",
    "frame_bytes_for",
]

#: Sample rates the protocol allows (PROTOCOL.md, "Audio format").
SAMPLE_RATES: frozenset[int] = frozenset({8000, 16000, 24000})

#: The server paces audio in 20 ms frames; a client uses the same size when the server does not
#: say which it prefers.
FRAME_MS = 20

#: Channel ids of binary frames. 0: what the agent hears (everything, mixed), and the only
#: channel the agent may send on; 1 and 2: the caller's and the callee's legs in isolated mode.
CHANNEL_MIXED = 0
CHANNEL_CALLER = 1
CHANNEL_CALLEE = 2


def frame_bytes_for(sample_rate: int) -> int:
    """Bytes of PCM16 mono in one 20 ms frame at ``sample_rate`` (960 at 24 kHz)."""
    return sample_rate * FRAME_MS // 1000 * 2


def encode_audio(channel: int, pcm: bytes | bytearray | memoryview) -> bytes:
    """The binary message that carries ``pcm`` on ``channel``."""
    return bytes((channel,)) + pcm
