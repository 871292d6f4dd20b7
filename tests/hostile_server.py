"""A hostile Telcoflow server for tests: it speaks just enough of PROTOCOL.md to get a client to
take a call, then feeds both connections adversarial frames.

Built on the SDK's own rings (``telcoflow._net`` for the WebSockets, ``telcoflow._core`` for the
well-formed frames) so that what is well-formed here is exactly what the SDK expects; everything
else is made by hand. It accepts any credentials on ``/v1/agent/control``, answers ``setup`` with
``setup.done`` and offers calls whose media URL points back at itself (``/media/<call id>``, a
bearer token per call). Other paths misbehave on purpose (see :data:`TRAPS`) to stand in for
unreachable or broken media endpoints.

Every frame comes from a ``random.Random(seed)``, so a failing seed reproduces; every hostile frame
sent is counted in :data:`SENT` by kind. Nothing here asserts: the tests decide what is correct.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from telcoflow._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_TEXT_MESSAGE_CHARS,
    AudioFrame,
    CallEnded,
    CallIncoming,
    CallTerminatedEvent,
    CommandRequest,
    CommandResponse,
    ProtocolError,
    Role,
    Setup,
    SetupDone,
    UnknownCallEvent,
    decode_control,
    decode_media,
    encode,
)
from telcoflow._net import (
    MAX_MESSAGE_BYTES,
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
)

__all__ = [
    "CONTROL_PATH",
    "SENT",
    "TRAPS",
    "ControlSession",
    "Frame",
    "HostileServer",
    "MediaSession",
    "Responder",
    "audio_flood",
    "control_garbage",
    "fatal_media_frames",
    "hostile_responder",
    "media_garbage",
    "open_hostile_server",
    "random_control_frame",
    "random_media_frame",
    "raw_frame",
]

CONTROL_PATH = "/v1/agent/control"

#: Every hostile input sent by any server in this process, by kind (a test reports the total).
SENT: Counter[str] = Counter()

#: Frame bytes of 20 ms at 24 kHz, the size of a well-formed audio payload.
PCM_FRAME = 960

#: Paths that misbehave instead of accepting a media connection, for "unreachable" offers.
TRAPS = ("/reject/401", "/reject/500", "/garbage", "/close", "/bad-accept", "/hang", "/nowhere")

#: What a socket may raise when the client hangs up on us mid-handshake.
STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

#: How long an unanswered connection (``/hang``) is held; the client's connect timeout is shorter.
HANG_SECONDS = 30.0


# --- frames ---------------------------------------------------------------------------------------


class Frame:
    """One hostile input: a text or binary message, or hand-made wire bytes (``raw``).

    ``kind`` names the category, for counting and for failure messages.
    """

    __slots__ = ("kind", "payload", "raw")

    def __init__(self, kind: str, payload: str | bytes, *, raw: bool = False) -> None:
        self.kind = kind
        self.payload = payload
        self.raw = raw

    def __repr__(self) -> str:
        size = len(self.payload)
        head = self.payload[:60]
        return f"Frame({self.kind!r}, {size} {'raw bytes' if self.raw else 'long'}: {head!r})"


class Lit:
    """JSON text spliced verbatim into a message: values ``json.dumps`` will not write."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Lit({self.text[:20]!r})"


def dump(value: object) -> str:
    """JSON text for ``value``, where any :class:`Lit` inside is written as it is."""
    if isinstance(value, Lit):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def message(kind: str, data: object) -> str:
    return dump({"type": kind, "data": data})


#: Values that are the wrong type, out of range or otherwise odd for almost any field.
ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    2**63,
    -(2**63) - 1,
    10**400,
    Lit("1e308"),
    Lit("1e400"),
    Lit("-1e400"),
    Lit("NaN"),
    Lit("Infinity"),
    Lit("1" + "0" * 5000),  # past Python's int-from-text digit limit
    "",
    "x",
    "a" * 257,  # past the codec's id bound
    "\u0000",
    Lit('"\\ud800"'),  # a lone surrogate
    "\U0001f600" * 10,
    [],
    {},
    [None],
    {"k": "v"},
    Lit("[" * 40 + "]" * 40),
)

#: Odd values that are not a usable ``call.terminated`` reason (not a string, or too long).
NOT_A_REASON: tuple[object, ...] = tuple(
    v
    for v in ODD_VALUES
    if not (isinstance(v, str) and len(v) <= 256)
    and not (isinstance(v, Lit) and v.text.startswith('"'))
)

#: Text that is not a JSON object with a string ``type`` (or not JSON at all).
NOT_JSON: tuple[str, ...] = (
    "",
    " ",
    "{",
    "}",
    '{"type":',
    "{'type': 'x'}",
    "null",
    "true",
    "1",
    "1e400",
    '"call.incoming"',
    "[]",
    '[{"type":"call.incoming"}]',
    "{}",
    '{"type":null}',
    '{"type":5}',
    '{"type":["a"]}',
    '{"data":{}}',
    '{"type":"x","data":[]}',
    '{"type":"x","data":"s"}',
    '{"type":"x","data":7}',
    '{"type":"x"}garbage',
    "\ufeff" + '{"type":"x","data":{}}',
    "\x00\x01\x02",
    "NaN",
)

#: A few hundred levels: within what ``json`` parses. Tens of thousands: past its recursion limit.
NESTING_DEPTHS = (200, 900, 5_000, 20_000)

#: Message types a client knows, with their well-formed fields (used to build wrong variants).
CONTROL_TEMPLATES: dict[str, dict[str, object]] = {
    "setup.done": {"connectionId": "hostile"},
    "error": {"code": "X", "message": "hostile"},
    "call.ended": {"callId": "nobody", "reason": "caller_hangup"},
    "call.incoming": {
        "callId": "ghost",
        "from": "+1",
        "to": "+2",
        "direction": "MT",
        "mediaUrl": "ws://127.0.0.1:1/nowhere",
        "mediaToken": "t",
        "createdAt": 0.0,
    },
}
MEDIA_TEMPLATES: dict[str, dict[str, object]] = {
    "command_response": {
        "command_id": "c999999",
        "success": True,
        "result": None,
        "error_code": None,
        "error_message": None,
    },
    "buffer_request": {"requested_bytes": 960, "prefer_audio_frame_bytes": 960, "channelId": 0},
    "call_event": {"event": "call.error", "error_code": "X", "message": "hostile"},
}


def _pcm(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _long_text(kind: str, size: int) -> str:
    """A well-formed message of a known type padded to ``size`` characters."""
    head = '{"type":"' + kind + '","data":{"pad":"'
    tail = '"}}'
    return head + "a" * max(0, size - len(head) - len(tail)) + tail


def _nested(depth: int) -> str:
    return '{"type":"x","data":' + '{"a":' * depth + "1" + "}" * depth + "}"


def _wrong_fields(rng: random.Random, kind: str, fields: dict[str, object]) -> str:
    """``kind`` with one to three fields replaced by odd values or dropped, maybe one added."""
    data: dict[str, object] = dict(fields)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(sorted(fields))
        if rng.random() < 0.25:
            data.pop(key, None)
        else:
            data[key] = rng.choice(ODD_VALUES)
    if rng.random() < 0.1:
        data["unknown_field"] = rng.choice(ODD_VALUES)
    return message(kind, data)


def json_garbage(rng: random.Random, plane: str) -> Frame:
    """Text that breaks the envelope: not JSON, not an object, bad ``type``/``data``, too big."""
    pick = rng.randrange(7)
    if pick == 0:
        return Frame("not-json", rng.choice(NOT_JSON))
    if pick == 1:
        return Frame("deep-nesting", _nested(rng.choice(NESTING_DEPTHS)))
    if pick == 2:
        size = rng.choice(
            (MAX_TEXT_MESSAGE_CHARS - 1, MAX_TEXT_MESSAGE_CHARS, MAX_TEXT_MESSAGE_CHARS + 1)
        )
        kind = rng.choice(sorted(CONTROL_TEMPLATES if plane == "control" else MEDIA_TEMPLATES))
        return Frame("text-near-bound", _long_text(kind, size))
    if pick == 3:
        return Frame("text-over-bound", _long_text("x", rng.randint(65_537, 600_000)))
    if pick == 4:
        return Frame("unknown-type", message(rng.choice(("x", "", "a" * 5000, "SETUP")), {}))
    if pick == 5:
        # Types only the other role sends, which this role must not act on.
        kind = "setup" if plane == "control" else "command"
        data = {"sampleRate": 24000} if plane == "control" else {"command_id": "x"}
        return Frame("wrong-direction", message(kind, data))
    value = rng.choice(ODD_VALUES)
    return Frame(
        "odd-data", dump({"type": "call_event" if plane == "media" else "error", "data": value})
    )


# --- raw WebSocket frames -------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """One WebSocket frame as a server writes it (unmasked unless ``mask``); ``length`` lies."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask is not None:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def fragmented(opcode: int, payload: bytes, pieces: int) -> bytes:
    """``payload`` as one message of (about) ``pieces`` frames."""
    step = max(1, math.ceil(len(payload) / pieces))
    chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        out += raw_frame(opcode if i == 0 else OP_CONT, chunk, fin=i == len(chunks) - 1)
    return bytes(out)


def raw_benign(rng: random.Random, text: str) -> Frame:
    """Odd but legal framing: pings, unsolicited pongs, fragments, empty messages."""
    pick = rng.randrange(6)
    if pick == 0:
        return Frame("raw-ping", raw_frame(OP_PING, rng.randbytes(rng.randint(0, 125))), raw=True)
    if pick == 1:
        return Frame("raw-pong", raw_frame(OP_PONG, rng.randbytes(rng.randint(0, 125))), raw=True)
    if pick == 2:
        data = text.encode()
        pieces = rng.randint(2, min(50, max(2, len(data))))
        return Frame("raw-fragmented-text", fragmented(OP_TEXT, data, pieces), raw=True)
    if pick == 3:
        return Frame("raw-empty-text", raw_frame(OP_TEXT), raw=True)
    if pick == 4:
        return Frame("raw-empty-binary", raw_frame(OP_BINARY), raw=True)
    # A ping between the fragments of a message: allowed by RFC 6455.
    data = text.encode()
    half = len(data) // 2
    wire = (
        raw_frame(OP_TEXT, data[:half], fin=False)
        + raw_frame(OP_PING, b"mid")
        + raw_frame(OP_CONT, data[half:])
    )
    return Frame("raw-ping-between-fragments", wire, raw=True)


def fatal_framing(rng: random.Random) -> list[Frame]:
    """Framing errors after which the connection cannot go on (the client must close it)."""
    return [
        Frame("raw-invalid-utf8", raw_frame(OP_TEXT, b'{"type":"\xff\xfe"}'), raw=True),
        Frame(
            "raw-reserved-opcode", raw_frame(rng.choice((3, 4, 5, 6, 7, 11, 15)), b"x"), raw=True
        ),
        Frame("raw-rsv-bits", raw_frame(OP_TEXT, b"{}", rsv=rng.randint(1, 7)), raw=True),
        Frame("raw-masked-by-server", raw_frame(OP_TEXT, b"{}", mask=b"abcd"), raw=True),
        Frame("raw-big-control", raw_frame(OP_PING, b"p" * 126), raw=True),
        Frame("raw-fragmented-control", raw_frame(OP_PING, b"p", fin=False), raw=True),
        Frame("raw-unexpected-continuation", raw_frame(OP_CONT, b"x"), raw=True),
        Frame(
            "raw-interleaved-data",
            raw_frame(OP_TEXT, b'{"ty', fin=False) + raw_frame(OP_BINARY, b"\x00\x00\x00"),
            raw=True,
        ),
        Frame("raw-length-top-bit", raw_frame(OP_BINARY, b"", length=1 << 63), raw=True),
        Frame("raw-bad-close-code", raw_frame(OP_CLOSE, struct.pack("!H", 999)), raw=True),
        Frame("raw-close-1-byte", raw_frame(OP_CLOSE, b"\x03"), raw=True),
    ]


# --- control plane --------------------------------------------------------------------------------


def _incoming(call_id: str, media_url: str, token: str, **override: object) -> dict[str, object]:
    data: dict[str, object] = {
        "callId": call_id,
        "from": "+15550001",
        "to": "+15550002",
        "direction": "MT",
        "mediaUrl": media_url,
        "mediaToken": token,
        "createdAt": 1_700_000_000.0,
    }
    data.update(override)
    return data


def random_control_frame(
    rng: random.Random, *, live_call_id: str, trap_url: Callable[[str], str]
) -> Frame:
    """One hostile control frame: garbage the client must ignore without losing the connection.

    ``live_call_id`` is a call the client holds (offered again, it must be ignored);
    ``trap_url(path)`` builds a media URL on this server that misbehaves.
    """
    pick = rng.randrange(10)
    if pick == 0:
        return json_garbage(rng, "control")
    if pick == 1:
        kind = rng.choice(sorted(CONTROL_TEMPLATES))
        return Frame(f"wrong-fields:{kind}", _wrong_fields(rng, kind, CONTROL_TEMPLATES[kind]))
    if pick == 2:
        return Frame("setup.done-again", message("setup.done", {"connectionId": "again"}))
    if pick == 3:
        code = rng.choice(("X", "", "a" * 250, "RATE_LIMITED"))
        return Frame("error-frame", message("error", {"code": code, "message": "hostile"}))
    if pick == 4:
        cid = rng.choice(("nobody", "", "a" * 256, live_call_id + "x"))
        return Frame("call.ended-unknown", message("call.ended", {"callId": cid, "reason": "x"}))
    if pick == 5:
        # Had the client opened it, the server would have seen (and refused) a second handshake.
        url = trap_url(f"/media/{live_call_id}")
        return Frame(
            "call.incoming-duplicate",
            message("call.incoming", _incoming(live_call_id, url, "stale")),
        )
    if pick == 6:
        cid = f"trap-{rng.randrange(10**9)}"
        path = rng.choice([t for t in TRAPS if t != "/hang"])  # /hang holds a connect timeout
        return Frame(
            f"call.incoming-unreachable:{path}",
            message("call.incoming", _incoming(cid, trap_url(path), "t")),
        )
    if pick == 7:
        return Frame("binary-on-control", rng.randbytes(rng.choice((0, 1, 2, 961, 70_000))))
    if pick == 8:
        return raw_benign(rng, message("x", {"n": rng.randrange(1000)}))
    created = rng.choice(ODD_VALUES)
    return Frame(
        "call.incoming-odd-createdAt",
        message(
            "call.incoming",
            _incoming(f"odd-{rng.randrange(10**9)}", trap_url("/close"), "t", createdAt=created),
        ),
    )


def malformed_frames(templates: dict[str, dict[str, object]]) -> list[Frame]:
    """Text that is not JSON, JSON nested too deep, and each frame of ``templates`` with each
    field in turn given every odd value, then left out."""
    frames = [Frame("not-json", text) for text in NOT_JSON]
    frames += [Frame("deep-nesting", _nested(d)) for d in NESTING_DEPTHS]
    for kind, fields in templates.items():
        for key in fields:
            for value in ODD_VALUES:
                data = dict(fields)
                data[key] = value
                frames.append(Frame(f"wrong-field:{kind}.{key}", message(kind, data)))
            data = dict(fields)
            del data[key]
            frames.append(Frame(f"missing-field:{kind}.{key}", message(kind, data)))
    return frames


def control_garbage(
    rng: random.Random, *, live_call_id: str, trap_url: Callable[[str], str]
) -> list[Frame]:
    """A scripted control barrage: every kind of :func:`random_control_frame`, several times."""
    frames = malformed_frames(CONTROL_TEMPLATES)
    frames.append(Frame("text-over-bound", _long_text("call.incoming", MAX_TEXT_MESSAGE_CHARS + 1)))
    frames.append(Frame("setup.done-again", message("setup.done", {"connectionId": "again"})))
    frames.append(Frame("setup.done-again", message("setup.done", {"connectionId": "again2"})))
    frames += [
        random_control_frame(rng, live_call_id=live_call_id, trap_url=trap_url) for _ in range(200)
    ]
    return frames


# --- media plane ----------------------------------------------------------------------------------


def audio_frame(channel: int, pcm: bytes) -> bytes:
    wire = encode(AudioFrame(channel, pcm))
    assert isinstance(wire, bytes)
    return wire


def audio_flood(n: int, *, channel: int = CHANNEL_MIXED, size: int = PCM_FRAME) -> list[Frame]:
    """``n`` well-formed audio frames; each payload starts with its sequence number (4 bytes)."""
    filler = b"\x00" * (size - 4)
    return [
        Frame("audio-flood", audio_frame(channel, i.to_bytes(4, "big") + filler)) for i in range(n)
    ]


def random_audio(rng: random.Random) -> Frame:
    """A binary frame: malformed (empty, 1 byte, odd, unknown channel, too big) or well-formed."""
    pick = rng.randrange(8)
    if pick == 0:
        return Frame("audio-empty", b"")
    if pick == 1:
        return Frame("audio-1-byte", bytes([rng.randrange(256)]))
    if pick == 2:
        n = rng.randrange(0, 2000) | 1
        return Frame("audio-odd-payload", bytes([CHANNEL_MIXED]) + _pcm(rng, n))
    if pick == 3:
        return Frame("audio-unknown-channel", bytes([rng.randint(3, 255)]) + _pcm(rng, PCM_FRAME))
    if pick == 4:
        n = rng.choice((MAX_AUDIO_PAYLOAD_BYTES + 2, MAX_AUDIO_PAYLOAD_BYTES * 4))
        return Frame("audio-over-bound", bytes([CHANNEL_MIXED]) + bytes(n))
    if pick == 5:
        n = rng.choice((2, MAX_AUDIO_PAYLOAD_BYTES))
        return Frame("audio-edge-size", bytes([CHANNEL_MIXED]) + _pcm(rng, n))
    if pick == 6:
        channel = rng.choice((CHANNEL_CALLER, CHANNEL_CALLEE))
        return Frame("audio-other-leg", audio_frame(channel, _pcm(rng, PCM_FRAME)))
    return Frame("audio-valid", audio_frame(CHANNEL_MIXED, _pcm(rng, PCM_FRAME)))


def _command_response(command_id: object, **override: object) -> str:
    data: dict[str, object] = {
        "command_id": command_id,
        "success": True,
        "result": None,
        "error_code": None,
        "error_message": None,
    }
    data.update(override)
    return message("command_response", data)


def random_command_response(rng: random.Random, command_ids: Sequence[str]) -> Frame:
    """A response to no command, to an answered one, or to an open one with wrong types."""
    known = rng.choice(command_ids) if command_ids else "c1"
    pick = rng.randrange(6)
    if pick == 0:
        cid = rng.choice(("c0", "c999999", "", "x" * 256, "c-1", known + "0"))
        return Frame("response-unknown-id", _command_response(cid))
    if pick == 1:
        return Frame("response-odd-id", _command_response(rng.choice(ODD_VALUES)))
    if pick == 2:
        key = rng.choice(("success", "error_code", "error_message"))
        value = rng.choice(ODD_VALUES)
        return Frame(f"response-odd-{key}", _command_response(known, **{key: value}))
    if pick == 3:
        return Frame("response-odd-result", _command_response(known, result=rng.choice(ODD_VALUES)))
    if pick == 4:
        code = rng.choice(
            ("TIMEOUT", "CALL_TERMINATED", "INVALID_STATE", "", "a" * 300, "NEW_CODE")
        )
        return Frame(
            "response-replayed-failure", _command_response(known, success=False, error_code=code)
        )
    return Frame("response-missing-field", message("command_response", {"command_id": known}))


def random_buffer_request(rng: random.Random) -> Frame:
    """Credit of odd amounts, odd frame sizes, foreign channels, wrong types."""
    requested: object = rng.choice(
        (-1, 0, 1, 3, 960, MAX_CREDIT_GRANT_BYTES, MAX_CREDIT_GRANT_BYTES + 1, 2**63, 10**400)
    )
    if rng.random() < 0.2:
        requested = rng.choice((Lit("1e308"), True, "960", None, 1.5))
    frame = rng.choice((0, 1, 2, 3, 959, 960, MAX_AUDIO_PAYLOAD_BYTES, MAX_AUDIO_PAYLOAD_BYTES + 2))
    frame_or_odd = frame if rng.random() < 0.7 else rng.choice(ODD_VALUES)
    channel = rng.choice((0, 0, 1, 2, 3, 255, -1, 2**63, True, "0", None))
    data: dict[str, object] = {
        "requested_bytes": requested,
        "prefer_audio_frame_bytes": frame_or_odd,
        "channelId": channel,
    }
    if rng.random() < 0.1:
        del data[rng.choice(sorted(data))]
    return Frame("buffer_request", message("buffer_request", data))


def random_call_event(rng: random.Random) -> Frame:
    """Unknown events, ``call.terminated`` without a usable reason, ``call.error`` of all shapes."""
    pick = rng.randrange(5)
    if pick == 0:
        event = rng.choice(("call.unknown", "", "CALL.TERMINATED", "call.terminated ", "a" * 256))
        return Frame("call_event-unknown", message("call_event", {"event": event}))
    if pick == 1:
        return Frame(
            "call_event-terminated-no-reason", message("call_event", {"event": "call.terminated"})
        )
    if pick == 2:
        reason = rng.choice(NOT_A_REASON)
        return Frame(
            "call_event-terminated-odd-reason",
            message("call_event", {"event": "call.terminated", "reason": reason}),
        )
    if pick == 3:
        return Frame(
            "call_event-odd-event", message("call_event", {"event": rng.choice(ODD_VALUES)})
        )
    return Frame(
        "call_event-error",
        _wrong_fields(rng, "call_event", {"event": "call.error", "error_code": "X", "message": "m"})
        if rng.random() < 0.5
        else message("call_event", {"event": "call.error", "error_code": "X", "message": "m"}),
    )


def random_media_frame(rng: random.Random, command_ids: Sequence[str]) -> Frame:
    """One hostile media frame that a client must survive with its media connection open."""
    pick = rng.randrange(9)
    if pick == 0:
        return json_garbage(rng, "media")
    if pick == 1:
        kind = rng.choice(sorted(MEDIA_TEMPLATES))
        return Frame(f"wrong-fields:{kind}", _wrong_fields(rng, kind, MEDIA_TEMPLATES[kind]))
    if pick == 2:
        return random_command_response(rng, command_ids)
    if pick == 3:
        return random_buffer_request(rng)
    if pick == 4:
        return random_call_event(rng)
    if pick in (5, 6):
        return random_audio(rng)
    if pick == 7:
        return raw_benign(rng, _command_response("c0"))
    wire = encode(UnknownCallEvent(rng.choice(("call.ringing", "call.hold"))))
    assert isinstance(wire, str)
    return Frame("call_event-future", wire)


def media_garbage(rng: random.Random, command_ids: Sequence[str] = ()) -> list[Frame]:
    """A scripted media barrage: every malformed shape once, then random frames."""
    frames = malformed_frames(MEDIA_TEMPLATES)
    frames += [
        Frame("audio-empty", b""),
        Frame("audio-1-byte", b"\x00"),
        Frame("audio-odd-payload", b"\x00\x01\x02\x03"),
        Frame("audio-over-bound", b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 2)),
    ]
    frames += [Frame("audio-unknown-channel", bytes([c]) + bytes(PCM_FRAME)) for c in range(3, 256)]
    frames.append(
        Frame("text-over-bound", _long_text("command_response", MAX_TEXT_MESSAGE_CHARS + 1))
    )
    frames += [random_media_frame(rng, command_ids) for _ in range(300)]
    return frames


def fatal_media_frames(rng: random.Random) -> list[Frame]:
    """Inputs that end a media connection: framing errors and messages past the size bound."""
    over = MAX_MESSAGE_BYTES + rng.randint(1, 4096)
    return [
        *fatal_framing(rng),
        Frame("oversized-binary", b"\x00" * over),
        Frame("oversized-text", _long_text("command_response", over)),
        Frame(
            "oversized-fragmented",
            fragmented(OP_BINARY, b"\x00" * (over | 1), 64),
            raw=True,
        ),
    ]


# --- the server -----------------------------------------------------------------------------------


class ControlSession:
    """One accepted control connection, set up; the test sends on it at will."""

    def __init__(self, conn: WebSocketConnection, setup: Setup | None) -> None:
        self.conn = conn
        self.setup = setup
        self.closed = anyio.Event()
        self.close_code: int | None = None


Responder = Callable[["MediaSession", CommandRequest], Awaitable[None]]


class MediaSession:
    """One accepted media connection: the commands the client sent, the audio it sent, how it ended.

    Commands go to ``responder`` when one is set, else to :meth:`next_command`.
    """

    def __init__(self, call_id: str, conn: WebSocketConnection) -> None:
        self.call_id = call_id
        self.conn = conn
        self.responder: Responder | None = None
        self.command_ids: list[str] = []
        self.audio_bytes = 0
        self.bad_frames = 0
        self.closed = anyio.Event()
        self.close_code: int | None = None
        #: Set while this session reads (see :meth:`pause_reading`).
        self.reading = anyio.Event()
        self.reading.set()
        self._commands_in, self._commands_out = anyio.create_memory_object_stream[CommandRequest](
            math.inf
        )

    async def next_command(self, timeout: float = 5.0) -> CommandRequest:
        with anyio.fail_after(timeout):
            return await self._commands_out.receive()

    def drop_pending_commands(self) -> list[CommandRequest]:
        dropped = []
        while True:
            try:
                dropped.append(self._commands_out.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return dropped

    def pause_reading(self) -> None:
        """Stop reading: the client's writes then pile up in the socket buffers, then block."""
        self.reading = anyio.Event()

    def resume_reading(self) -> None:
        self.reading.set()

    def close(self) -> None:
        self._commands_in.close()
        self._commands_out.close()

    async def stream_audio(self, frames_per_write: int = 5) -> None:
        """Send well-formed audio as fast as the client takes it, until the connection closes."""
        batch = [f.payload for f in audio_flood(frames_per_write)]
        try:
            while True:
                await self.conn.send_many(batch)
                SENT["audio-flood"] += frames_per_write
                await anyio.lowlevel.checkpoint()
        except ConnectionClosed:
            pass

    async def respond(self, command_id: str, success: bool = True, **fields: Any) -> None:
        wire = encode(CommandResponse(command_id, success, **fields))
        assert isinstance(wire, str)
        await self.conn.send(wire)

    async def terminate(self, reason: str = "caller_hangup") -> None:
        wire = encode(CallTerminatedEvent(reason))
        assert isinstance(wire, str)
        await self.conn.send(wire)

    async def _serve(self) -> None:
        try:
            while True:
                await self.reading.wait()
                raw = await self.conn.receive()
                if isinstance(raw, bytes):
                    self.audio_bytes += len(raw) - 1
                    continue
                try:
                    msg = decode_media(raw, Role.SERVER)
                except ProtocolError:
                    self.bad_frames += 1
                    continue
                if isinstance(msg, CommandRequest):
                    self.command_ids.append(msg.command_id)
                    if self.responder is not None:
                        await self.responder(self, msg)
                    else:
                        self._commands_in.send_nowait(msg)
        except ConnectionClosed as exc:
            self.close_code = exc.code
        finally:
            self.closed.set()
            self._commands_in.close()


def hostile_responder(rng: random.Random) -> Responder:
    """Answers each command at random: well, badly, twice, late, not at all, or with garbage."""

    async def respond(session: MediaSession, cmd: CommandRequest) -> None:
        pick = rng.randrange(8)
        try:
            if pick == 0:
                await session.respond(cmd.command_id, True)
            elif pick == 1:
                code = rng.choice(("INVALID_STATE", "TIMEOUT", "CALL_UNANSWERED", "NEW_CODE"))
                await session.respond(cmd.command_id, False, error_code=code, error_message="no")
            elif pick == 2:  # exactly-once violated
                await session.respond(cmd.command_id, True)
                await session.respond(cmd.command_id, False, error_code="INVALID_STATE")
                SENT["response-duplicate"] += 1
            elif pick == 3:
                await session.conn.send(_command_response(cmd.command_id, success="yes"))
                SENT["response-odd-success"] += 1
            elif pick == 4:
                await session.conn.send(_command_response(cmd.command_id, result=Lit("1e400")))
                SENT["response-inf-result"] += 1
            elif pick == 5:
                await session.conn.send(_command_response(cmd.command_id.upper()))
                SENT["response-wrong-id"] += 1
            # 6, 7: no answer at all; the client's command times out.
        except ConnectionClosed:
            pass

    return respond


class HostileServer:
    """Serves control and media WebSockets on 127.0.0.1; see the module docstring."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.seed = seed
        self.rng = random.Random(seed)
        self.controls: list[ControlSession] = []
        self.media: list[MediaSession] = []
        self.handshakes: list[str] = []
        self._tokens: dict[str, str] = {}
        self._control_in, self._control_out = anyio.create_memory_object_stream[ControlSession](
            math.inf
        )
        self._media_in, self._media_out = anyio.create_memory_object_stream[MediaSession](math.inf)
        self._next_call = 0
        self._tg: anyio.abc.TaskGroup | None = None
        #: Sent after the client's setup and before setup.done on each new control connection.
        self.before_setup_done: list[Frame] = []

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def start_soon(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``func`` in the server's task group: it stops when the server does, at the latest."""
        assert self._tg is not None
        self._tg.start_soon(func)

    def media_sessions(self, call_id: str) -> list[MediaSession]:
        return [m for m in self.media if m.call_id == call_id]

    # --- what the test drives ---------------------------------------------------------------------

    async def next_control(self, timeout: float = 5.0) -> ControlSession:
        with anyio.fail_after(timeout):
            return await self._control_out.receive()

    async def next_media(self, timeout: float = 5.0) -> MediaSession:
        with anyio.fail_after(timeout):
            return await self._media_out.receive()

    async def offer(
        self,
        control: ControlSession,
        call_id: str | None = None,
        *,
        media_url: str | None = None,
        token: str | None = None,
    ) -> str:
        """Offer a call over ``control``; by default its media URL is this server's."""
        if call_id is None:
            self._next_call += 1
            call_id = f"call-{self.seed}-{self._next_call}"
        token = token if token is not None else f"tok-{self.rng.randrange(10**12)}"
        self._tokens[call_id] = token
        offer = CallIncoming(
            call_id=call_id,
            from_number="+15550001",
            to_number="+15550002",
            direction="MT",
            media_url=media_url if media_url is not None else self.url(f"/media/{call_id}"),
            media_token=token,
            created_at=1_700_000_000.0,
        )
        wire = encode(offer)
        assert isinstance(wire, str)
        await control.conn.send(wire)
        return call_id

    async def end_offer(
        self, control: ControlSession, call_id: str, reason: str = "caller_hangup"
    ) -> None:
        wire = encode(CallEnded(call_id, reason))
        assert isinstance(wire, str)
        await control.conn.send(wire)

    async def send(
        self, conn: WebSocketConnection, frames: Sequence[Frame], *, batch: int = 1
    ) -> int:
        """Send ``frames`` in order (``batch`` per socket write); how many went before a close."""
        sent = 0
        pending: list[str | bytes] = []
        try:
            for frame in frames:
                if frame.raw:
                    if pending:
                        await conn.send_many(pending)
                        pending = []
                    assert isinstance(frame.payload, bytes)
                    await send_raw(conn, frame.payload)
                else:
                    pending.append(frame.payload)
                    if len(pending) >= batch:
                        await conn.send_many(pending)
                        pending = []
                SENT[frame.kind] += 1
                sent += 1
            if pending:
                await conn.send_many(pending)
        except ConnectionClosed:
            pass
        return sent

    # --- connections ------------------------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        try:
            handshake = await ServerHandshake.start(stream, b"")
            target = handshake.request.target
            self.handshakes.append(target)
            path = target.split("?", 1)[0]
            if path == CONTROL_PATH:
                await self._serve_control(handshake)
            elif path.startswith("/media/"):
                await self._serve_media(handshake, path.removeprefix("/media/"))
            else:
                await self._trap(stream, handshake, path)
        except (ConnectFailed, ConnectionClosed, *STREAM_ERRORS):
            pass  # the client went away: that is its right
        finally:
            await anyio.aclose_forcefully(stream)

    async def _trap(
        self, stream: anyio.abc.ByteStream, handshake: ServerHandshake, path: str
    ) -> None:
        if path.startswith("/reject/"):
            await handshake.reject(int(path.removeprefix("/reject/")), "hostile refusal")
        elif path == "/garbage":
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif path == "/bad-accept":
            await stream.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"
            )
        elif path == "/hang":
            await anyio.sleep(HANG_SECONDS)
        elif path == "/close":
            pass
        else:
            await handshake.reject(404, "no such endpoint")

    async def _serve_control(self, handshake: ServerHandshake) -> None:
        conn = await handshake.accept("hostile control")
        setup: Setup | None = None
        try:
            raw = await conn.receive()
            try:
                msg = decode_control(raw, Role.SERVER)
                setup = msg if isinstance(msg, Setup) else None
            except ProtocolError:
                setup = None
            if self.before_setup_done:
                await self.send(conn, self.before_setup_done)
            wire = encode(SetupDone(f"hostile-{len(self.controls)}"))
            assert isinstance(wire, str)
            await conn.send(wire)
        except ConnectionClosed:
            return
        session = ControlSession(conn, setup)
        self.controls.append(session)
        self._control_in.send_nowait(session)
        try:
            while True:
                await conn.receive()  # nothing is expected; this answers pings, sees the close
        except ConnectionClosed as exc:
            session.close_code = exc.code
        finally:
            session.closed.set()
            await conn.aclose()

    async def _serve_media(self, handshake: ServerHandshake, call_id: str) -> None:
        token = self._tokens.get(call_id)
        if token is None or handshake.headers.get("authorization") != f"Bearer {token}":
            await handshake.reject(401, "invalid media token")
            return
        conn = await handshake.accept(f"hostile media {call_id}")
        session = MediaSession(call_id, conn)
        self.media.append(session)
        self._media_in.send_nowait(session)
        try:
            await session._serve()
        finally:
            await conn.aclose()

    def close(self) -> None:
        for stream in (self._control_in, self._control_out, self._media_in, self._media_out):
            stream.close()
        for media in self.media:
            media.close()


async def send_raw(conn: WebSocketConnection, wire: bytes) -> None:
    """Write hand-made frames, serialised with the connection's other writes.

    Reaches into the connection (its outgoing buffer and flush): the public API only sends
    well-formed messages, which is the point of this module not to.
    """
    if conn.closed is not None:
        raise conn.closed
    conn._outgoing += wire
    await conn._flush()


@asynccontextmanager
async def open_hostile_server(seed: int = 0) -> AsyncIterator[HostileServer]:
    """Serve on an ephemeral port until the block ends; every connection is then dropped."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server = HostileServer(listener.extra(anyio.abc.SocketAttribute.local_port), seed)
    try:
        async with listener, anyio.create_task_group() as tg:
            server._tg = tg
            tg.start_soon(listener.serve, server._handle)
            yield server
            tg.cancel_scope.cancel()
    finally:
        server.close()
