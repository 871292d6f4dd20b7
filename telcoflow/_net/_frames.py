"""The common WebSocket frames, encoded and parsed directly (RFC 6455 section 5); pure, no I/O.

A media connection carries 50 small data frames a second each way, each one whole message.
wsproto handles every frame through a general machine (buffers, frame and message decoders,
event objects, a generator per parse); for that common case this module does the same work in a
few lines. Everything else stays wsproto's: the handshake, control frames (ping, pong, close, which
the connection hands to wsproto whole), fragmented messages, and every malformed frame, which
makes the connection give the rest of its stream to wsproto so that the error is wsproto's own.
"""

from __future__ import annotations

import os
import struct

__all__ = [
    "CONTROL",
    "CONTROL_FRAME_BYTES",
    "FAST_PAYLOAD_BYTES",
    "OP_BINARY",
    "OP_TEXT",
    "Frame",
    "encode_data_frame",
    "mask_payload",
    "next_frame",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
#: Close, ping, pong: at most 125 bytes of payload, never fragmented.
CONTROL = frozenset((0x8, 0x9, 0xA))
#: The longest a well-formed control frame can be: 125 bytes, an 8-byte length, a mask key.
CONTROL_FRAME_BYTES = 2 + 8 + 4 + 125

#: Data frames up to this size are parsed here; a larger one goes to wsproto (which streams it
#: in pieces rather than holding it whole). Protocol messages are far smaller.
FAST_PAYLOAD_BYTES = 64 * 1024

_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (masking and unmasking alike)."""
    n = len(payload)
    if not n:
        return b""
    keys = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little"
    )


def encode_data_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One whole (FIN) text or binary frame; ``masked`` for a client's frames, with a fresh key."""
    n = len(payload)
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = _SHORT.pack(first, mask_bit | 126, n)
    else:
        header = _LONG.pack(first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = _mask_key()
    return header + key + mask_payload(payload, key)


#: Masking keys are drawn from os.urandom in batches: one getrandom() call per 1024 frames
#: instead of one per frame (a syscall per frame, 5 % of a busy client's samples). The keys are
#: as unpredictable as before (RFC 6455 §5.3 asks for a strong source of entropy); a forked
#: child starts a batch of its own so it never repeats its parent's keys.
_KEY_BATCH = 4096
_keys = b""
_key_pos = 0


def _mask_key() -> bytes:
    global _keys, _key_pos
    pos = _key_pos
    if pos >= len(_keys):
        _keys, pos = os.urandom(_KEY_BATCH), 0
    _key_pos = pos + 4
    return _keys[pos : pos + 4]


def _new_key_batch_after_fork() -> None:
    global _keys, _key_pos
    _keys, _key_pos = b"", 0


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX CPython
    os.register_at_fork(after_in_child=_new_key_batch_after_fork)


class Frame:
    """The frame at the start of a buffer, as far as its header tells (see :func:`next_frame`)."""

    __slots__ = ("end", "fast", "opcode", "payload")

    def __init__(self, opcode: int, end: int, fast: bool, payload: bytes | None) -> None:
        #: The frame's opcode.
        self.opcode = opcode
        #: Where the frame ends in the buffer (it may not all be there yet).
        self.end = end
        #: A whole, well-formed, unfragmented data frame: ``payload`` is its (unmasked) payload.
        self.fast = fast
        self.payload = payload


def next_frame(buf: bytes | bytearray, start: int, expect_masked: bool) -> Frame | None:
    """Look at the frame starting at ``buf[start]``.

    None if its header is not all there yet. Otherwise a :class:`Frame`: ``fast`` with the
    payload for a whole unfragmented text or binary frame of at most ``FAST_PAYLOAD_BYTES``,
    correctly masked (``expect_masked``: frames from a client) and with no reserved bit set;
    for anything else ``fast`` is False and the caller decides (a whole control frame goes to
    wsproto; anything unusual makes wsproto take over the stream).
    """
    have = len(buf) - start
    if have < 2:
        return None
    first, second = buf[start], buf[start + 1]
    opcode = first & 0x0F
    masked = bool(second & 0x80)
    length = second & 0x7F
    pos = start + 2
    minimal = True  # RFC 6455 5.2: a length takes the fewest bytes it can
    if length == 126:
        if have < 4:
            return None
        length = (buf[pos] << 8) | buf[pos + 1]
        minimal = length >= 126
        pos += 2
    elif length == 127:
        if have < 10:
            return None
        length = int.from_bytes(buf[pos : pos + 8], "big")
        minimal = length >= 65536
        pos += 8
    if masked:
        pos += 4
    end = pos + length
    if (
        first & 0xF0 != 0x80  # not FIN, or a reserved bit (no extension is negotiated)
        or (opcode != OP_BINARY and opcode != OP_TEXT)
        or masked is not expect_masked
        or length > FAST_PAYLOAD_BYTES
        or not minimal
    ):
        return Frame(opcode, end, False, None)
    if len(buf) < end:
        return None
    payload = bytes(buf[pos:end])
    if masked:
        payload = mask_payload(payload, bytes(buf[pos - 4 : pos]))
    return Frame(opcode, end, True, payload)
