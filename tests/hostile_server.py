"""A hostile Telcoflow server for tests: it speaks just enough of PROTOCOL.md (version 2) to get a
client to take a call, then feeds both connections adversarial frames.

Built on the SDK's own rings (``telcoflow._net`` for the WebSockets, ``telcoflow._core`` for the
well-formed frames and for the server's side of the control protocol, request correlation
included) so that what is well-formed here is exactly what the SDK expects; everything else is
made by hand.

The control plane (``/v1/agent/session-manager``) accepts any credentials and answers ``setup``
with ``setup.done`` (an ``smWsId``). A call is offered as the hosted service offers one: an
:class:`Offer` is notified (``session.notify``); the client's claim (``session.open``) is answered
as the offer's policy says (correctly, or in one of the hostile ways of :data:`CLAIM_POLICIES`);
after ``session.ready`` comes ``call.in``, whose media URL points back at this server
(``/media/<call id>``) with a bearer token of its own. Other paths misbehave on purpose (see
:data:`TRAPS`) to stand in for unreachable or broken media endpoints.

Sessions notified by the random frames carry their claim policy in their id
(``h<n>~<policy>``), so that the server answers them with no state shared with the frame
generator, and the odd values of each answer come from a ``random.Random(session id)``: a frame
replayed from a seed is answered the same way. Those sessions' ``call.in`` never names a usable
media URL: whatever the client does with them, no call of theirs can be delivered.

Hand-made wire bytes (raw frames: bad framing, fragments, pings) go out through the connection's
one sanctioned door for them, :meth:`WebSocketConnection.send_raw`, between two of its own whole
frames, so its write accounting stays exact.

Every frame comes from a ``random.Random(seed)``, so a failing seed reproduces; every hostile input
sent is counted in :data:`SENT` by kind and in :data:`PLANES` by plane. Every token and key made
here contains :data:`SECRET_MARK`, which no URL does, so that a test can search the logs for it.
Nothing here asserts: the tests decide what is correct.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
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
    MAX_ID_CHARS,
    MAX_TEXT_MESSAGE_CHARS,
    MAX_URL_CHARS,
    BadRequest,
    CallFlowSetup,
    CallIn,
    CallTerminatedEvent,
    CloseReason,
    CommandRequest,
    CommandResponse,
    ControlProtocol,
    ControlState,
    ErrorCode,
    ProtocolError,
    Response,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownCallEvent,
    WaMessageOut,
    decode_media,
    encode_audio,
    encode_control,
    encode_media,
)
from telcoflow._net import (
    MAX_MESSAGE_BYTES,
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
)

__all__ = [
    "CLAIM_POLICIES",
    "CONTROL_PATH",
    "ENDING_REASONS",
    "NOT_A_STRING",
    "OMIT",
    "OP_BINARY",
    "OP_CONT",
    "OP_PING",
    "OTHER_CHANNEL",
    "PLANES",
    "SECRET_MARK",
    "SENT",
    "TRAPS",
    "UNUSABLE_URLS",
    "ControlSession",
    "Frame",
    "HostileServer",
    "MediaSession",
    "Offer",
    "Responder",
    "audio_flood",
    "control_garbage",
    "control_message",
    "ending_media_frames",
    "fatal_framing",
    "fatal_media_frames",
    "hostile_responder",
    "media_garbage",
    "message",
    "open_hostile_server",
    "policy_session_id",
    "random_control_frame",
    "random_media_frame",
    "raw_frame",
    "secret_token",
]

CONTROL_PATH = "/v1/agent/session-manager"
MEDIA_PREFIX = "/media/"

#: Every hostile input sent by any server in this process, by kind (a test reports the total).
SENT: Counter[str] = Counter()
#: The same inputs by plane: "control" (the session manager) or "media".
PLANES: Counter[str] = Counter()

#: In every media token and API key this module makes, and in no URL or other field.
SECRET_MARK = "s3cr3t"

#: Frame bytes of 20 ms at 24 kHz, the size of a well-formed audio payload.
PCM_FRAME = 960

#: Paths that misbehave instead of accepting a media connection, for "unreachable" offers.
TRAPS = ("/reject/401", "/reject/500", "/garbage", "/close", "/bad-accept", "/hang", "/nowhere")
#: The traps random frames use: ``/hang`` holds one of the client's connect timeouts each.
QUICK_TRAPS = tuple(t for t in TRAPS if t != "/hang")

#: Media URLs no client can use, whatever the server: not WebSocket, no host, a host that does
#: not exist, a port nobody listens on.
UNUSABLE_URLS = (
    "http://127.0.0.1:1/media/x",
    "https://127.0.0.1:1/media/x",
    "ftp://127.0.0.1/media/x",
    "javascript:alert(1)",
    "",
    "/media/relative",
    "ws:/no-slashes",
    "ws:///no-host",
    "ws://no-such-host.invalid/media/x",
    "wss://no-such-host.invalid/media/x",
    "ws://127.0.0.1:1/refused",
    "ws://127.0.0.1:99999/port-out-of-range",
    "ws://a\x00b/nul-in-host",
    "ws://" + "a" * 70 + ".invalid/label-too-long",
    "ws://[::1/bad-ipv6",  # once crashed the client (urlsplit raised outside any try)
)

#: What a socket may raise when the client hangs up on us mid-handshake.
STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

#: The reason a call ends with when the agent leaves it by a command.
LEAVE_REASONS = {"call.close": "agent_close", "call.disconnect": "agent_disconnect"}

#: The first byte of a TLS connection (a handshake record).
TLS_HANDSHAKE = b"\x16"

#: How long an unanswered connection (``/hang``) is held; the client's connect timeout is shorter.
HANG_SECONDS = 30.0

#: Session ids of notifications on a channel other than TELCO start with this.
OTHER_CHANNEL = "other-channel-"

#: The ``smWsId`` of a session bound elsewhere, in ``SESSION_BUSY`` answers.
ELSEWHERE = "sm-elsewhere"


def count(kind: str, plane: str, n: int = 1) -> None:
    """Count ``n`` hostile inputs of ``kind`` sent on ``plane``."""
    SENT[kind] += n
    PLANES[plane] += n


def secret_token(rng: random.Random, size: int = 0) -> str:
    """A bearer token (``size`` characters at least, JWT-like when long)."""
    token = f"tok-{SECRET_MARK}-{rng.randrange(10**12)}"
    if len(token) < size:
        token += "." + "J" * (size - len(token) - 1)
    return token


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


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: As a field's value: leave the field out.
OMIT: Any = _Omit()


def dump(value: object) -> str:
    """JSON text for ``value``, where any :class:`Lit` inside is written as it is and any field
    whose value is :data:`OMIT` is left out."""
    if isinstance(value, Lit):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}:{dump(v)}" for k, v in value.items() if v is not OMIT)
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def message(kind: str, data: object) -> str:
    """A media-plane frame: its fields in a ``data`` object."""
    return dump({"type": kind, "data": data})


def control_message(kind: str, fields: Mapping[str, object]) -> str:
    """A control-plane frame from the server: its fields at the top level, beside ``type``."""
    return dump({"type": kind, **fields})


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
    Lit("1" + "0" * 5000),  # past Python's int-from-text digit limit: the frame is not JSON
    "",
    "x",
    "a" * (MAX_ID_CHARS + 1),  # past the codec's id bound
    "\u0000",
    Lit('"\\ud800"'),  # a lone surrogate
    "\U0001f600" * 10,
    [],
    {},
    [None],
    {"k": "v"},
    Lit("[" * 40 + "]" * 40),
)

#: Odd values a JSON parser reads (the frame around them stays valid JSON).
PARSEABLE_ODD = tuple(v for v in ODD_VALUES if not (isinstance(v, Lit) and len(v.text) > 1000))

#: Odd values that are not a string (nor null): not a usable text field anywhere.
NOT_A_STRING: tuple[object, ...] = tuple(
    v
    for v in ODD_VALUES
    if v is not None and not isinstance(v, str) and not (isinstance(v, Lit) and v.text[0] == '"')
)

#: Odd values that are true, and false, as the official client reads ``ok`` (``bool()``).
TRUTHY_ODD = ("no", "false", 1, -1, 1.5, [0], {"ok": False}, Lit("NaN"), Lit("1e400"))
FALSY_ODD: tuple[object, ...] = (0, -0.0, "", [], {}, None, OMIT)

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
    '"session.notify"',
    "[]",
    '[{"type":"session.notify","sessionId":"s"}]',
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

#: A request id no request of the client's has (they are uuid4s).
GHOST_REQ = "00000000-0000-4000-8000-000000000000"
#: A command id no command of the client's has (they are uuid4s).
GHOST_COMMAND = "00000000-0000-4000-8000-00000000dead"

#: The server's control frames a client knows, with well-formed fields (used to build wrong
#: variants). Their sessions are none the client holds: ``ghost`` is answered SESSION_NOT_FOUND.
CONTROL_TEMPLATES: dict[str, dict[str, object]] = {
    "setup.done": {"smWsId": "hostile-again"},
    "error": {"code": "X", "message": "hostile"},
    "session.notify": {
        "sessionId": "ghost",
        "channel": "TELCO",
        "remoteAddress": "+15550001",
        "localAddress": "+15550002",
        "activity": "NEW_INCOMING_CALL",
        "createdAt": 1_700_000_000,
    },
    "response": {
        "reqId": GHOST_REQ,
        "ok": True,
        "content": None,
        "errorCode": None,
        "errorContent": None,
    },
    "call.in": {
        "sessionId": "ghost-call",
        "callId": "ghost",
        "orgUuid": "org",
        "from": "+15550001",
        "to": "+15550002",
        "url": "ws://127.0.0.1:1/nowhere",
        "token": "t",
    },
    "session.closed": {
        "sessionId": "ghost-closed",
        "reason": "CALL_TERMINATED",
        "detail": "CALL_UNANSWERED",
    },
}
MEDIA_TEMPLATES: dict[str, dict[str, object]] = {
    "command_response": {
        "command_id": GHOST_COMMAND,
        "success": True,
        "result": None,
        "error_code": None,
        "error_message": None,
    },
    "buffer_request": {"requested_bytes": 960, "prefer_audio_frame_bytes": 960, "channelId": 0},
    "call_event": {"event": "call.error", "error_code": "X", "error_message": "hostile"},
}


def _pcm(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _long_text(kind: str, size: int, plane: str = "media") -> str:
    """A message of a known type padded to ``size`` characters (fields as the plane puts them)."""
    head = '{"type":"' + kind + ('","pad":"' if plane == "control" else '","data":{"pad":"')
    tail = '"}' if plane == "control" else '"}}'
    return head + "a" * max(0, size - len(head) - len(tail)) + tail


def _nested(depth: int) -> str:
    return '{"type":"x","data":' + '{"a":' * depth + "1" + "}" * depth + "}"


def _wrong_fields(rng: random.Random, kind: str, fields: dict[str, object], plane: str) -> str:
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
    return control_message(kind, data) if plane == "control" else message(kind, data)


#: Types only a client sends, which a client must not act on when a server sends them.
CLIENT_TYPES = ("setup", "session.open", "session.ready", "session.create", "call_flow.setup")


def json_garbage(rng: random.Random, plane: str) -> Frame:
    """Text that breaks the envelope: not JSON, not an object, bad ``type``/``data``, too big."""
    pick = rng.randrange(8)
    if pick == 0:
        return Frame("not-json", rng.choice(NOT_JSON))
    if pick == 1:
        return Frame("deep-nesting", _nested(rng.choice(NESTING_DEPTHS)))
    if pick == 2:
        size = rng.choice(
            (MAX_TEXT_MESSAGE_CHARS - 1, MAX_TEXT_MESSAGE_CHARS, MAX_TEXT_MESSAGE_CHARS + 1)
        )
        kind = rng.choice(sorted(CONTROL_TEMPLATES if plane == "control" else MEDIA_TEMPLATES))
        return Frame("text-near-bound", _long_text(kind, size, plane))
    if pick == 3:
        return Frame("text-over-bound", _long_text("x", rng.randint(65_537, 600_000), plane))
    if pick == 4:
        kind = rng.choice(("x", "", "a" * 5000, "SETUP", "SESSION.NOTIFY", "call.incoming"))
        text = control_message(kind, {}) if plane == "control" else message(kind, {})
        return Frame("unknown-type", text)
    if pick == 5:
        if plane == "control":
            kind = rng.choice(CLIENT_TYPES)
            fields: dict[str, object] = {
                "sessionId": "ghost",
                "reqId": GHOST_REQ,
                "data": {"sampleRate": 24000},
            }
            return Frame("wrong-direction", control_message(kind, fields))
        return Frame("wrong-direction", message("command", {"command_id": "x"}))
    if pick == 6 and plane == "control":
        # The fields of a server frame wrapped in ``data``, as client frames carry theirs (and
        # as version 1 did): the top level lacks them.
        kind = rng.choice(sorted(CONTROL_TEMPLATES))
        return Frame(f"enveloped:{kind}", message(kind, CONTROL_TEMPLATES[kind]))
    value = rng.choice(ODD_VALUES)
    if plane == "media":
        return Frame("odd-data", dump({"type": "call_event", "data": value}))
    fields = {"sessionId": "ghost-closed", "reason": "FORCE_CLOSE", "data": value}
    return Frame("odd-data", control_message("session.closed", fields))


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


# --- control plane: how the server answers claims ------------------------------------------------

#: How the server answers a claim (``session.open``) of a session it notified, and what it sends
#: once the session is ready. "good" is the protocol; every other one is hostile. The tests
#: pin what a client does with each (``tests/test_hostile.py``, ``CLAIM_OUTCOMES``).
CLAIM_POLICIES = (
    "good",
    "busy",  # SESSION_BUSY {boundSmWsId}: another process has it
    "busy-odd-content",  # SESSION_BUSY, errorContent not an object
    "closed",  # SESSION_CLOSED
    "not-found",  # SESSION_NOT_FOUND
    "odd-error",  # ok false; errorCode, errorContent and content odd values
    "odd-ok",  # ok an odd value that is true; content as it should be
    "falsy-ok",  # ok an odd value that is false (or no ok at all); no errorCode
    "odd-content",  # ok true, content an odd value
    "silent",  # ok, then nothing: no call.in
    "closed-instead",  # ok, then session.closed instead of call.in
    "closed-first",  # session.closed, then ok (the call ended before the claim was answered)
    "early-call.in",  # call.in before the response (before session.ready)
    "no-answer",  # no response at all
    "late",  # the response after the client has stopped waiting for it
    "wrong-reqId",  # a response to another reqId
    "missing-reqId",  # a response without reqId
    "odd-reqId",  # a response whose reqId is not a string
    "duplicate",  # ok twice
    "conflict",  # ok, then SESSION_BUSY for the same reqId
    "response-flood",  # 50 responses to requests nobody made, then ok
    "bad-call.in",  # ok; then a call.in that cannot be read (field missing, odd or too long)
    "odd-call.in",  # ok; then a call.in whose media URL no client can use
    "two-call.in",  # ok; then a call.in at a trap, then one at a usable media URL
    "busy-then-call.in",  # SESSION_BUSY, then the call.in all the same
    "closed-then-call.in",  # ok; then session.closed and call.in together (in one write)
)


def policy_session_id(rng: random.Random, policy: str) -> str:
    """A fresh session id that tells this server how to answer its claim."""
    return f"h{rng.randrange(10**9)}~{policy}"


def _bad_call_in(rng: random.Random, fields: dict[str, object]) -> tuple[str, str]:
    """``fields`` of a call.in made unreadable: a required field missing or odd, or too long."""
    pick = rng.randrange(4)
    data = dict(fields)
    if pick == 0:
        key = rng.choice(("sessionId", "callId", "url", "token"))
        data[key] = OMIT
        return f"missing-{key}", control_message("call.in", data)
    if pick == 1:
        key = rng.choice(("sessionId", "callId", "url", "token", "orgUuid", "from", "to"))
        data[key] = rng.choice(NOT_A_STRING)
        return f"odd-{key}", control_message("call.in", data)
    if pick == 2:
        data["token"] = secret_token(rng, MAX_URL_CHARS + rng.choice((1, 100, 60_000)))
        return "token-over-8KiB", control_message("call.in", data)
    data["url"] = f"{data['url']}?pad=" + "u" * MAX_URL_CHARS
    return "url-over-8KiB", control_message("call.in", data)


# --- control plane: hostile frames ---------------------------------------------------------------


def _notify_fields(session_id: str, **override: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "sessionId": session_id,
        "channel": "TELCO",
        "remoteAddress": "+15550001",
        "localAddress": "+15550002",
        "activity": "NEW_INCOMING_CALL",
        "createdAt": 1_700_000_000,
    }
    fields.update(override)
    return fields


def _call_in_fields(
    session_id: str, call_id: str, url: str, token: str, **override: object
) -> dict[str, object]:
    fields: dict[str, object] = {
        "sessionId": session_id,
        "callId": call_id,
        "orgUuid": "org-hostile",
        "from": "+15550001",
        "to": "+15550002",
        "url": url,
        "token": token,
    }
    fields.update(override)
    return fields


def random_control_frame(
    rng: random.Random,
    *,
    live_session_id: str,
    live_call_id: str,
    trap_url: Callable[[str], str],
) -> Frame:
    """One hostile control frame: the client must survive it with its connection open, take no
    call because of it and lose none (the garbage names sessions it holds, sessions it never
    heard of, and sessions whose claims this server answers in one of its hostile ways).

    ``live_session_id``/``live_call_id`` are a call the client holds (notified, given a
    ``call.in`` or closed again, it must go on undisturbed); ``trap_url(path)`` builds a media
    URL on this server that misbehaves.
    """
    pick = rng.randrange(17)
    if pick == 0:
        return json_garbage(rng, "control")
    if pick == 1:
        kind = rng.choice(sorted(CONTROL_TEMPLATES))
        wrong = _wrong_fields(rng, kind, CONTROL_TEMPLATES[kind], "control")
        return Frame(f"wrong-fields:{kind}", wrong)
    if pick == 2:
        sm: object = rng.choice(("again", "", "a" * 300, None, 5, [], "\ud800"))
        return Frame("setup.done-again", control_message("setup.done", {"smWsId": sm}))
    if pick == 3:
        code: object = rng.choice(("X", "", "a" * 250, "RATE_LIMITED", 5, None))
        return Frame("error-frame", control_message("error", {"code": code, "message": "hostile"}))
    if pick == 4:
        sid = rng.choice(("nobody", "", "a" * 256, live_session_id + "x", live_session_id.upper()))
        reason = rng.choice(("CALL_TERMINATED", "FORCE_CLOSE", "SDK_REQUEST", "x", OMIT, None))
        fields = {"sessionId": sid, "reason": reason}
        return Frame("session.closed-unknown", control_message("session.closed", fields))
    if pick == 5:
        # The media plane is the authority for a connected call: this must not end it.
        reason = rng.choice(("CALL_TERMINATED", "FORCE_CLOSE", "SDK_REQUEST", "", "x", OMIT))
        detail = rng.choice((OMIT, None, "CALL_UNANSWERED", "CALL_REJECTED", "x"))
        fields = {"sessionId": live_session_id, "reason": reason, "detail": detail}
        return Frame("session.closed-live", control_message("session.closed", fields))
    if pick == 6:
        # Had the client opened it, the server would have seen (and refused) a second handshake.
        url = trap_url(f"{MEDIA_PREFIX}{live_call_id}")
        fields = _call_in_fields(live_session_id, live_call_id, url, secret_token(rng))
        return Frame("call.in-duplicate", control_message("call.in", fields))
    if pick == 7:
        activity = rng.choice(("NEW_INCOMING_CALL", "RESUME", "NEW_INCOMING_MESSAGE", "x", ""))
        fields = _notify_fields(live_session_id, activity=activity)
        return Frame("session.notify-live", control_message("session.notify", fields))
    if pick == 8:
        policy = rng.choice(CLAIM_POLICIES)
        sid = policy_session_id(rng, policy)
        activity = rng.choice(("NEW_INCOMING_CALL", "RESUME", "FUTURE_ACTIVITY"))
        fields = _notify_fields(sid, activity=activity)
        return Frame(f"session.notify-hostile:{policy}", control_message("session.notify", fields))
    if pick == 9:
        sid = f"never-notified-{rng.randrange(10**9)}"
        url = trap_url(rng.choice(QUICK_TRAPS))
        fields = _call_in_fields(sid, f"c-{sid}", url, secret_token(rng))
        return Frame("call.in-unknown-session", control_message("call.in", fields))
    if pick == 10:
        req = rng.choice((GHOST_REQ, GHOST_REQ.upper(), "", "r" * 300))
        fields = {
            "reqId": req,
            "ok": rng.choice(ODD_VALUES),
            "content": rng.choice(ODD_VALUES),
            "errorCode": rng.choice(("SESSION_BUSY", None, 5, "")),
            "errorContent": rng.choice(ODD_VALUES),
        }
        return Frame("response-unsolicited", control_message("response", fields))
    if pick == 11:
        size = rng.choice((0, 1, 2, 961, 70_000))
        return Frame("binary-on-control", rng.randbytes(size))
    if pick == 12:
        return raw_benign(rng, control_message("x", {"n": rng.randrange(1000)}))
    if pick == 13:
        # A number the client must read, or refuse, without losing its footing; the session
        # is answered SESSION_NOT_FOUND when claimed.
        created = rng.choice(ODD_VALUES)
        fields = _notify_fields(f"odd-created-{rng.randrange(10**9)}", createdAt=created)
        return Frame("session.notify-odd-createdAt", control_message("session.notify", fields))
    if pick == 14:
        # For a session the client never heard of: to be ignored, however odd.
        sid = f"never-notified-{rng.randrange(10**9)}"
        kind, wire = _bad_call_in(rng, _call_in_fields(sid, "c", trap_url("/close"), "t"))
        return Frame(f"call.in-{kind}", wire)
    if pick == 15:
        # Not a call: never to be claimed (the test looks for claims of OTHER_CHANNEL ids).
        channel = rng.choice(("WA", "", "telco", "TELCO ", "SMS", None))
        sid = f"{OTHER_CHANNEL}{rng.randrange(10**9)}~good"
        fields = _notify_fields(sid, channel=channel)
        return Frame("session.notify-other-channel", control_message("session.notify", fields))
    url = rng.choice(UNUSABLE_URLS)
    fields = _call_in_fields(f"never-notified-{rng.randrange(10**9)}", "c", url, "t")
    return Frame("call.in-unusable-url", control_message("call.in", fields))


def malformed_frames(templates: dict[str, dict[str, object]], plane: str) -> list[Frame]:
    """Text that is not JSON, JSON nested too deep, and each frame of ``templates`` with each
    field in turn given every odd value, then left out."""
    build = control_message if plane == "control" else message
    frames = [Frame("not-json", text) for text in NOT_JSON]
    frames += [Frame("deep-nesting", _nested(d)) for d in NESTING_DEPTHS]
    for kind, fields in templates.items():
        for key in fields:
            for value in ODD_VALUES:
                data = dict(fields)
                data[key] = value
                frames.append(Frame(f"wrong-field:{kind}.{key}", build(kind, data)))
            data = dict(fields)
            del data[key]
            frames.append(Frame(f"missing-field:{kind}.{key}", build(kind, data)))
    return frames


def control_garbage(
    rng: random.Random,
    *,
    live_session_id: str,
    live_call_id: str,
    trap_url: Callable[[str], str],
) -> list[Frame]:
    """A scripted control barrage: every malformed shape once, every claim policy once, floods of
    notifications and closes, then random frames of every kind."""
    frames = malformed_frames(CONTROL_TEMPLATES, "control")
    size = MAX_TEXT_MESSAGE_CHARS + 1
    frames.append(Frame("text-over-bound", _long_text("session.notify", size, "control")))
    for sm in ("again", "again2"):
        frames.append(Frame("setup.done-again", control_message("setup.done", {"smWsId": sm})))
    frames += [Frame("binary-on-control", bytes(n)) for n in (0, 1, 2, 961)]
    for kind in sorted(CONTROL_TEMPLATES):
        frames.append(Frame(f"enveloped:{kind}", message(kind, CONTROL_TEMPLATES[kind])))
    for policy in CLAIM_POLICIES:
        fields = _notify_fields(policy_session_id(rng, policy))
        frames.append(
            Frame(f"session.notify-hostile:{policy}", control_message("session.notify", fields))
        )
    live = _notify_fields(live_session_id, activity="RESUME")
    frames += [Frame("notify-flood-live", control_message("session.notify", live))] * 200
    ghosts = (
        control_message("session.closed", {"sessionId": f"gone-{i}", "reason": "FORCE_CLOSE"})
        for i in range(200)
    )
    frames += [Frame("closed-flood-unknown", text) for text in ghosts]
    frames += [
        random_control_frame(
            rng, live_session_id=live_session_id, live_call_id=live_call_id, trap_url=trap_url
        )
        for _ in range(300)
    ]
    return frames


# --- media plane ----------------------------------------------------------------------------------


def audio_frame(channel: int, pcm: bytes) -> bytes:
    return encode_audio(channel, pcm)


def audio_flood(n: int, *, channel: int = CHANNEL_MIXED, size: int = PCM_FRAME) -> list[Frame]:
    """``n`` well-formed audio frames; each payload starts with its sequence number (4 bytes)."""
    filler = b"\x00" * (size - 4)
    return [
        Frame("audio-flood", audio_frame(channel, i.to_bytes(4, "big") + filler)) for i in range(n)
    ]


def random_audio(rng: random.Random) -> Frame:
    """A binary frame. Unusable (empty, no payload, too big), or lenient decoding's to take
    (odd lengths, unknown channels, tiny payloads), or well-formed."""
    pick = rng.randrange(9)
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
        n = rng.choice((1, 2, MAX_AUDIO_PAYLOAD_BYTES - 1, MAX_AUDIO_PAYLOAD_BYTES))
        return Frame("audio-edge-size", bytes([CHANNEL_MIXED]) + _pcm(rng, n))
    if pick == 6:
        channel = rng.choice((CHANNEL_CALLER, CHANNEL_CALLEE))
        return Frame("audio-other-leg", audio_frame(channel, _pcm(rng, PCM_FRAME)))
    if pick == 7:
        return Frame("audio-odd-other-leg", bytes([rng.randint(1, 255)]) + _pcm(rng, 3))
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
    """A response to no command, to an answered one, or to an open one with odd fields."""
    known = rng.choice(command_ids) if command_ids else GHOST_COMMAND
    pick = rng.randrange(8)
    if pick == 0:
        cid = rng.choice(
            (GHOST_COMMAND, "c1", "", "x" * MAX_ID_CHARS, known.upper(), known + "0", known[:-1])
        )
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
        code: object = rng.choice(
            ("TIMEOUT", "CALL_TERMINATED", "INVALID_STATE", "", "a" * 300, "NEW_CODE", 7, [])
        )
        return Frame(
            "response-replayed-failure", _command_response(known, success=False, error_code=code)
        )
    if pick == 5:
        return Frame("response-missing-field", message("command_response", {"command_id": known}))
    if pick == 6:
        data: object = rng.choice((OMIT, None, [], "x", 5))
        return Frame("response-odd-data", dump({"type": "command_response", "data": data}))
    # Only the two fields the official client needs: everything else missing.
    return Frame(
        "response-minimal", message("command_response", {"command_id": known, "success": 1})
    )


def random_buffer_request(rng: random.Random) -> Frame:
    """Credit of odd amounts, odd frame sizes, foreign channels, wrong types."""
    requested: object = rng.choice(
        (-1, 0, 1, 3, 960, MAX_CREDIT_GRANT_BYTES, MAX_CREDIT_GRANT_BYTES + 1, 2**63, 10**400)
    )
    if rng.random() < 0.2:
        requested = rng.choice((Lit("1e308"), True, "960", None, 1.5, 960.0, Lit("NaN")))
    frame = rng.choice((0, 1, 2, 3, 959, 960, MAX_AUDIO_PAYLOAD_BYTES, MAX_AUDIO_PAYLOAD_BYTES + 2))
    frame_or_odd = frame if rng.random() < 0.7 else rng.choice(ODD_VALUES)
    channel = rng.choice((0, 0, 1, 2, 3, 255, -1, 2**63, True, "0", None, 0.0))
    data: dict[str, object] = {
        "requested_bytes": requested,
        "prefer_audio_frame_bytes": frame_or_odd,
        "channelId": channel,
    }
    if rng.random() < 0.1:
        del data[rng.choice(sorted(data))]
    return Frame("buffer_request", message("buffer_request", data))


#: ``event`` values that look like ``call.terminated`` and are not: unknown events, ignored.
TERMINATED_LOOKALIKES = (
    "call.terminated ",
    " call.terminated",
    "CALL.TERMINATED",
    "call.Terminated",
    "call.terminated\u0000",
    "call_terminated",
    "call.terminate",
)


def random_call_event(rng: random.Random) -> Frame:
    """Unknown events (look-alikes of ``call.terminated`` among them), odd ``event`` values,
    ``call.error`` of all shapes. None of them ends a call."""
    pick = rng.randrange(5)
    if pick == 0:
        event: object = rng.choice(("call.unknown", "", "a" * 300, *TERMINATED_LOOKALIKES))
        return Frame("call_event-unknown", message("call_event", {"event": event}))
    if pick == 1:
        event = rng.choice(TERMINATED_LOOKALIKES)
        data = {"event": event, "reason": rng.choice(("caller_hangup", None, 5))}
        return Frame("call_event-terminated-lookalike", message("call_event", data))
    if pick == 2:
        # A number, a list, an object made text: an unknown event; null or missing: a bad frame.
        event = rng.choice([v for v in ODD_VALUES if v != "call.terminated"])
        return Frame("call_event-odd-event", message("call_event", {"event": event}))
    if pick == 3:
        shape: dict[str, object] = {"event": "call.error"}
        for key in ("error_code", "error_message", "message"):
            if rng.random() < 0.6:
                shape[key] = rng.choice(("TTS_SESSION_ERROR", "m", *ODD_VALUES))
        return Frame("call_event-error-shape", message("call_event", shape))
    template = MEDIA_TEMPLATES["call_event"]
    if rng.random() < 0.5:
        return Frame("call_event-error", _wrong_fields(rng, "call_event", template, "media"))
    return Frame("call_event-error", message("call_event", template))


def random_media_frame(rng: random.Random, command_ids: Sequence[str]) -> Frame:
    """One hostile media frame that a client must survive with its media connection open."""
    pick = rng.randrange(9)
    if pick == 0:
        return json_garbage(rng, "media")
    if pick == 1:
        kind = rng.choice(sorted(MEDIA_TEMPLATES))
        wrong = _wrong_fields(rng, kind, MEDIA_TEMPLATES[kind], "media")
        return Frame(f"wrong-fields:{kind}", wrong)
    if pick == 2:
        return random_command_response(rng, command_ids)
    if pick == 3:
        return random_buffer_request(rng)
    if pick == 4:
        return random_call_event(rng)
    if pick in (5, 6):
        return random_audio(rng)
    if pick == 7:
        return raw_benign(rng, _command_response(GHOST_COMMAND))
    wire = encode_media(UnknownCallEvent(rng.choice(("call.ringing", "call.hold"))))
    return Frame("call_event-future", wire)


def media_garbage(rng: random.Random, command_ids: Sequence[str] = ()) -> list[Frame]:
    """A scripted media barrage: every malformed shape once, then random frames."""
    frames = malformed_frames(MEDIA_TEMPLATES, "media")
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
    """Inputs that end a media connection: framing errors and messages past the size bounds."""
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
        # Small, but in more fragments than any peer uses (the connection's MAX_FRAGMENTS).
        Frame("too-many-fragments", fragmented(OP_BINARY, b"\x00" * 5000, 5000), raw=True),
    ]


#: ``call.terminated`` reasons a lenient client reads: (the reason field, what the call's
#: termination reason is then; None: some text of at most MAX_ID_CHARS characters). The official
#: client ignores the reason; ours reports it, made text, and "unknown" when there is none
#: (PROTOCOL.md, ``call_event``).
ENDING_REASONS: tuple[tuple[object, str | None], ...] = (
    (OMIT, "unknown"),
    (None, "unknown"),
    ("", "unknown"),
    ("callee_hangup", "callee_hangup"),
    ("a_future_reason", "a_future_reason"),
    ("r" * 300, "r" * MAX_ID_CHARS),
    ("\U0001f600", "\U0001f600"),
    (5, None),
    (True, None),
    (1.5, None),
    ([], None),
    ({}, None),
    ({"k": "v"}, None),
    (Lit("1e400"), None),
    (Lit("NaN"), None),
    (10**400, None),
)


def ending_media_frames() -> list[tuple[Frame, str | None]]:
    """``call.terminated`` frames of every reason, each with the termination reason it means."""
    frames = []
    for value, expected in ENDING_REASONS:
        data = {"event": "call.terminated", "reason": value}
        frames.append(
            (Frame("call_event-terminated-odd-reason", message("call_event", data)), expected)
        )
    return frames


# --- the server -----------------------------------------------------------------------------------


class Offer:
    """A session this server notified: the call it stands for, and how its claim is answered.

    ``policy`` is one of :data:`CLAIM_POLICIES`; ``usable`` says whether its ``call.in`` names a
    media URL this server accepts (for the test's own calls) or a trap (for random frames).
    ``call_in`` overrides fields of its ``call.in`` (:data:`OMIT` leaves one out).
    """

    def __init__(
        self,
        session_id: str,
        call_id: str,
        *,
        url: str,
        token: str,
        policy: str = "good",
        call_in: Mapping[str, object] | None = None,
    ) -> None:
        assert policy in CLAIM_POLICIES, policy
        self.session_id = session_id
        self.call_id = call_id
        self.url = url
        self.token = token
        self.policy = policy
        self.call_in = dict(call_in or {})
        #: The claims received (control session, reqId), in order.
        self.claims: list[tuple[ControlSession, str]] = []
        self.readies = 0
        self.bound: ControlSession | None = None
        #: Leave the claims' answers to the test (:meth:`HostileServer.answer`).
        self.hold = False
        self.held: list[tuple[ControlSession, str]] = []
        self._rng: random.Random | None = None

    def __repr__(self) -> str:
        return f"<Offer {self.session_id} call {self.call_id} {self.policy}>"

    @property
    def rng(self) -> random.Random:
        """Odd values for this session's hostile answers, the same on every run."""
        if self._rng is None:
            self._rng = random.Random(self.session_id)
        return self._rng

    def content(self) -> dict[str, object]:
        """The ``content`` of a successful claim's response."""
        session = {
            "id": self.session_id,
            "channel": "TELCO",
            "remoteAddress": "+15550001",
            "localAddress": "+15550002",
            "openedAt": 1_700_000_000,
        }
        return {"session": session}


class ControlSession:
    """One accepted control connection, set up; the test sends on it at will.

    The server's side of the protocol (request correlation included) is a
    :class:`ControlProtocol`: what it sends through :meth:`push` is well-formed and answers each
    request once; hostile frames bypass it.
    """

    plane = "control"

    def __init__(self, conn: WebSocketConnection, sm_ws_id: str) -> None:
        self.conn = conn
        self.sm_ws_id = sm_ws_id
        self.proto = ControlProtocol(Role.SERVER)
        self.setup: Setup | None = None
        self.closed = anyio.Event()
        self.close_code: int | None = None
        #: Frames from the client this server could not read: a client that always speaks the
        #: protocol leaves this at 0, whatever it is sent.
        self.bad_frames = 0

    async def push(self, msg: Any) -> None:
        """Send a well-formed frame (checked and accounted by the protocol object)."""
        await self.conn.send(self.proto.send(msg))

    async def respond(self, req_id: str, ok: bool = True, **fields: Any) -> None:
        await self.push(Response(req_id, ok, **fields))


Responder = Callable[["MediaSession", CommandRequest], Awaitable[None]]


class MediaSession:
    """One accepted media connection: the commands the client sent, the audio it sent, how it ended.

    Commands go to ``responder`` when one is set, else to :meth:`next_command`.
    """

    plane = "media"

    def __init__(self, call_id: str, conn: WebSocketConnection) -> None:
        self.call_id = call_id
        self.conn = conn
        self.responder: Responder | None = None
        #: With no responder, answer the agent's leaving (call.close, call.disconnect) and end
        #: the call, as the service does, instead of handing it to the test.
        self.auto_leave = True
        self.command_ids: list[str] = []
        self.audio_bytes = 0
        #: Frames from the client this server could not read (a client bug if ever > 0).
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
                count("audio-flood", "media", frames_per_write)
                await anyio.lowlevel.checkpoint()
        except ConnectionClosed:
            pass

    async def respond(self, command_id: str, success: bool = True, **fields: Any) -> None:
        await self.conn.send(encode_media(CommandResponse(command_id, success, **fields)))

    async def terminate(self, reason: str = "caller_hangup") -> None:
        await self.conn.send(encode_media(CallTerminatedEvent(reason)))

    async def _serve(self) -> None:
        try:
            while True:
                await self.reading.wait()
                raw = await self.conn.receive()
                if isinstance(raw, bytes):
                    if raw[:1] != b"\x00":
                        self.bad_frames += 1  # the agent sends on channel 0 only
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
                    elif self.auto_leave and msg.command in LEAVE_REASONS:
                        # The agent leaves (the client does so on exit): as the service does.
                        await self.respond(msg.command_id, True)
                        await self.terminate(LEAVE_REASONS[msg.command])
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
        pick = rng.randrange(9)
        try:
            if pick == 0:
                await session.respond(cmd.command_id, True)
            elif pick == 1:
                code = rng.choice(("INVALID_STATE", "TIMEOUT", "CALL_UNANSWERED", "NEW_CODE"))
                await session.respond(cmd.command_id, False, error_code=code, error_message="no")
            elif pick == 2:  # exactly-once violated
                await session.respond(cmd.command_id, True)
                await session.respond(cmd.command_id, False, error_code="INVALID_STATE")
                count("response-duplicate", "media")
            elif pick == 3:
                success: object = rng.choice(("yes", "", 0, 1, [], None))
                await session.conn.send(_command_response(cmd.command_id, success=success))
                count("response-odd-success", "media")
            elif pick == 4:
                await session.conn.send(_command_response(cmd.command_id, result=Lit("1e400")))
                count("response-inf-result", "media")
            elif pick == 5:
                await session.conn.send(_command_response(cmd.command_id.upper()))
                count("response-wrong-id", "media")
            elif pick == 6:
                odd_code: object = rng.choice((5, [], {"c": 1}, True))
                wire = _command_response(cmd.command_id, success=False, error_code=odd_code)
                await session.conn.send(wire)
                count("response-odd-error-code", "media")
            # 7, 8: no answer at all; the client's command times out.
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
        #: Offers by session id, and by media token.
        self.offers: dict[str, Offer] = {}
        self._tokens: dict[str, Offer] = {}
        self._control_in, self._control_out = anyio.create_memory_object_stream[ControlSession](
            math.inf
        )
        self._media_in, self._media_out = anyio.create_memory_object_stream[MediaSession](math.inf)
        self._next_call = 0
        self._tg: anyio.abc.TaskGroup | None = None
        #: Sent after the client's setup and before setup.done on each new control connection.
        self.before_setup_done: list[Frame] = []
        #: Sent instead of the proper setup.done (None: the proper one); [] sends none at all.
        self.setup_done: list[Frame] | None = None
        #: How long a "late" claim policy waits before answering: past the client's
        #: request_timeout (tests/test_hostile.py sets 1 s).
        self.late_after = 1.5
        #: Held media handshakes: while set and not fired, media connections wait to be accepted.
        self.hold_media: anyio.Event | None = None
        #: Connections to ``/hang`` opened, and of those, dropped by the client.
        self.hangs_opened = 0
        self.hangs_dropped = 0
        #: Claims (``session.open``) received, by session id, for every session.
        self.claimed: Counter[str] = Counter()
        #: What this plain server does when a client speaks TLS to it: "hang-up", answer
        #: plain HTTP ("garbage"), or say nothing ("silent").
        self.on_tls = "hang-up"
        self.tls_hellos = 0
        #: Client requests other than claims (call flow, dial, messaging), answered ok.
        self.other_requests: list[object] = []

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

    async def next_media(self, call_id: str | None = None, timeout: float = 5.0) -> MediaSession:
        """The next media connection accepted (of ``call_id``, if given: others are skipped)."""
        with anyio.fail_after(timeout):
            while True:
                media = await self._media_out.receive()
                if call_id is None or media.call_id == call_id:
                    return media

    def new_offer(
        self,
        call_id: str | None = None,
        *,
        session_id: str | None = None,
        media_url: str | None = None,
        token: str | None = None,
        policy: str = "good",
        call_in: Mapping[str, object] | None = None,
    ) -> Offer:
        """A call this server will offer; by default its media URL is this server's."""
        self._next_call += 1
        if call_id is None:
            call_id = f"call-{self.seed}-{self._next_call}"
        if session_id is None:
            session_id = f"s-{self.seed}-{self._next_call}"
        token = token if token is not None else secret_token(self.rng)
        url = media_url if media_url is not None else self.url(f"{MEDIA_PREFIX}{call_id}")
        offer = Offer(session_id, call_id, url=url, token=token, policy=policy, call_in=call_in)
        self.offers[session_id] = offer
        self._tokens[token] = offer
        return offer

    async def notify(
        self, control: ControlSession, offer: Offer, activity: str = "NEW_INCOMING_CALL"
    ) -> None:
        """Notify ``control`` of ``offer`` (the hosted service notifies every connection; a test
        picks the ones it wants)."""
        note = SessionNotify(
            offer.session_id, "TELCO", "+15550001", "+15550002", activity, 1_700_000_000
        )
        await control.push(note)

    async def offer(
        self, control: ControlSession, call_id: str | None = None, **options: Any
    ) -> Offer:
        """Offer a call over ``control`` (see :meth:`new_offer` for the options)."""
        offer = self.new_offer(call_id, **options)
        await self.notify(control, offer)
        return offer

    async def close_session(
        self,
        control: ControlSession,
        session_id: str,
        reason: str = CloseReason.CALL_TERMINATED.value,
        detail: str | None = None,
    ) -> None:
        """``session.closed``: the call is over (before it was taken, if it was not)."""
        await control.push(SessionClosed(session_id, reason, detail))

    async def hang_up_all(self, control: ControlSession) -> int:
        """Every call notified on ``control`` and not connected ends, as when its caller hangs
        up: a claim still unanswered is answered SESSION_CLOSED, and ``session.closed`` follows
        for each. Returns how many sessions were closed."""
        connected = {m.call_id for m in self.media}
        pending = set(control.proto.pending())
        closed = 0
        for offer in list(self.offers.values()):
            if offer.call_id in connected or not offer.claims:
                continue
            for ctl, req_id in offer.claims:
                if ctl is control and req_id in pending:
                    pending.discard(req_id)
                    await control.respond(req_id, False, error_code=ErrorCode.SESSION_CLOSED.value)
            await self.close_session(control, offer.session_id)
            closed += 1
        count("session.closed-hang-up", "control", closed)
        return closed

    async def answer(self, offer: Offer) -> None:
        """Answer the claims of a held offer (``offer.hold``), as its policy says."""
        held, offer.held = offer.held, []
        for control, req_id in held:
            await self._answer(control, offer, req_id)

    async def send(
        self, target: ControlSession | MediaSession, frames: Sequence[Frame], *, batch: int = 1
    ) -> int:
        """Send ``frames`` in order (``batch`` per socket write); how many went before a close."""
        conn, plane = target.conn, target.plane
        sent = 0
        pending: list[str | bytes] = []
        try:
            for frame in frames:
                if frame.raw:
                    if pending:
                        await conn.send_many(pending)
                        pending = []
                    assert isinstance(frame.payload, bytes)
                    await conn.send_raw(frame.payload)
                else:
                    pending.append(frame.payload)
                    if len(pending) >= batch:
                        await conn.send_many(pending)
                        pending = []
                count(frame.kind, plane)
                sent += 1
            if pending:
                await conn.send_many(pending)
        except ConnectionClosed:
            pass
        return sent

    # --- connections ------------------------------------------------------------------------------

    async def _handle(self, socket: anyio.abc.ByteStream) -> None:
        stream = socket
        try:
            first = await stream.receive()
            if first[:1] == TLS_HANDSHAKE:  # a client speaking TLS to this plain server
                await self._tls_hello(stream)
                return
            handshake = await ServerHandshake.start(stream, first)
            target = handshake.request.target
            self.handshakes.append(target)
            path = target.split("?", 1)[0]
            if path == CONTROL_PATH:
                await self._serve_control(handshake)
            elif path.startswith(MEDIA_PREFIX):
                await self._serve_media(handshake, path.removeprefix(MEDIA_PREFIX))
            else:
                await self._trap(stream, handshake, path)
        except (ConnectFailed, ConnectionClosed, *STREAM_ERRORS):
            pass  # the client went away: that is its right
        finally:
            await anyio.aclose_forcefully(stream)

    async def _tls_hello(self, stream: anyio.abc.ByteStream) -> None:
        self.tls_hellos += 1
        if self.on_tls == "garbage":  # what a plain HTTP server answers
            await stream.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        elif self.on_tls == "silent":
            with anyio.move_on_after(HANG_SECONDS):
                while await stream.receive():
                    pass
        # "hang-up": the connection is dropped at once

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
            self.hangs_opened += 1
            with anyio.move_on_after(HANG_SECONDS):
                try:
                    while await stream.receive():
                        pass
                except STREAM_ERRORS:
                    pass
                self.hangs_dropped += 1  # the client hung up on us
        elif path == "/close":
            pass
        else:
            await handshake.reject(404, "no such endpoint")

    async def _serve_control(self, handshake: ServerHandshake) -> None:
        conn = await handshake.accept("hostile control")
        control = ControlSession(conn, f"sm-{self.seed}-{len(self.controls)}")
        try:
            try:
                msg = control.proto.receive(await conn.receive())
                control.setup = msg if isinstance(msg, Setup) else None
            except ProtocolError:
                control.bad_frames += 1
            if self.before_setup_done:
                await self.send(control, self.before_setup_done)
            if control.proto.state is ControlState.SETUP:
                # Through the protocol object even when something else is sent instead: from
                # here on it accounts the session's frames.
                wire = control.proto.send(SetupDone(control.sm_ws_id))
                if self.setup_done is None:
                    await conn.send(wire)
            if self.setup_done:
                await self.send(control, self.setup_done)
        except ConnectionClosed:
            await conn.aclose()
            return
        self.controls.append(control)
        self._control_in.send_nowait(control)
        try:
            while True:
                raw = await conn.receive()
                try:
                    msg = control.proto.receive(raw)
                except BadRequest as bad:
                    control.bad_frames += 1
                    await control.respond(bad.req_id, False, error_code="INVALID_REQUEST")
                    continue
                except ProtocolError:
                    control.bad_frames += 1
                    continue
                if isinstance(msg, SessionOpen):
                    await self._claim(control, msg)
                elif isinstance(msg, SessionReady):
                    await self._ready(control, msg)
                elif isinstance(msg, (SessionCreate, CallFlowSetup, WaMessageOut)):
                    self.other_requests.append(msg)
                    await control.respond(msg.req_id, True, content={})
        except ConnectionClosed as exc:
            control.close_code = exc.code
        finally:
            control.closed.set()
            await conn.aclose()

    def _offer_for(self, session_id: str) -> Offer | None:
        offer = self.offers.get(session_id)
        if offer is None and "~" in session_id:
            # A session of the random frames: its policy is in its id, and no call of it is
            # ever deliverable (its media URL is a trap; see the module docstring).
            policy = session_id.rsplit("~", 1)[1]
            if policy not in CLAIM_POLICIES:
                return None
            rng = random.Random(session_id)
            url = self.url(rng.choice(QUICK_TRAPS))
            offer = Offer(
                session_id, f"c-{session_id}", url=url, token=secret_token(rng), policy=policy
            )
            self.offers[session_id] = offer
        return offer

    async def _claim(self, control: ControlSession, msg: SessionOpen) -> None:
        offer = self._offer_for(msg.session_id)
        if offer is None:
            self.claimed[msg.session_id] += 1
            await control.respond(msg.req_id, False, error_code=ErrorCode.SESSION_NOT_FOUND.value)
            return
        offer.claims.append((control, msg.req_id))
        self.claimed[msg.session_id] += 1
        if offer.bound is not None and offer.bound is not control:
            await control.respond(
                msg.req_id,
                False,
                error_code=ErrorCode.SESSION_BUSY.value,
                error_content={"boundSmWsId": offer.bound.sm_ws_id},
            )
            return
        offer.bound = control
        if offer.hold:
            offer.held.append((control, msg.req_id))
            return
        await self._answer(control, offer, msg.req_id)

    async def _answer(self, control: ControlSession, offer: Offer, req_id: str) -> None:
        """Answer the claim ``req_id`` of ``offer`` as its policy says."""
        policy, rng = offer.policy, offer.rng
        if policy != "good":
            count(f"claim:{policy}", "control")

        def response(**fields: object) -> str:
            base: dict[str, object] = {
                "reqId": req_id,
                "ok": True,
                "content": offer.content(),
                "errorCode": None,
                "errorContent": None,
            }
            return control_message("response", {**base, **fields})

        async def ok() -> None:
            await control.respond(req_id, True, content=offer.content())

        async def refuse(code: ErrorCode, content: object = None) -> None:
            await control.respond(req_id, False, error_code=code.value, error_content=content)

        send = control.conn.send
        if policy in (
            "good",
            "silent",
            "closed-instead",
            "bad-call.in",
            "odd-call.in",
            "two-call.in",
            "closed-then-call.in",
        ):
            await ok()
        elif policy == "busy":
            await refuse(ErrorCode.SESSION_BUSY, {"boundSmWsId": ELSEWHERE})
        elif policy == "busy-then-call.in":
            await refuse(ErrorCode.SESSION_BUSY, {"boundSmWsId": ELSEWHERE})
            await self.send_call_in(control, offer)
        elif policy == "busy-odd-content":
            content = rng.choice([v for v in PARSEABLE_ODD if not isinstance(v, dict)])
            await send(response(ok=False, errorCode="SESSION_BUSY", errorContent=content))
        elif policy == "closed":
            await refuse(ErrorCode.SESSION_CLOSED)
        elif policy == "not-found":
            await refuse(ErrorCode.SESSION_NOT_FOUND)
        elif policy == "odd-error":
            odd = [*PARSEABLE_ODD, "SESSION_BUSY", "NEW_CODE"]
            fields = {"errorCode": rng.choice(odd), "errorContent": rng.choice(odd)}
            await send(response(ok=False, content=rng.choice(odd), **fields))
        elif policy == "odd-ok":
            await send(response(ok=rng.choice(TRUTHY_ODD)))
        elif policy == "falsy-ok":
            await send(response(ok=rng.choice(FALSY_ODD)))
        elif policy == "odd-content":
            await send(response(content=rng.choice(PARSEABLE_ODD)))
        elif policy == "closed-first":
            await self.close_session(control, offer.session_id, CloseReason.FORCE_CLOSE.value)
            await ok()
        elif policy == "early-call.in":
            await self.send_call_in(control, offer)
            await ok()
        elif policy == "no-answer":
            pass
        elif policy == "late":

            async def late() -> None:
                await anyio.sleep(self.late_after)
                if req_id in control.proto.pending():  # not hung up meanwhile
                    try:
                        await ok()
                    except ConnectionClosed:
                        pass

            self.start_soon(late)
        elif policy == "wrong-reqId":
            other = rng.choice((req_id.upper(), req_id + "x", req_id[:-1], GHOST_REQ, ""))
            await send(response(reqId=other))
        elif policy == "missing-reqId":
            await send(response(reqId=OMIT))
        elif policy == "odd-reqId":
            await send(response(reqId=rng.choice(NOT_A_STRING)))
        elif policy == "duplicate":
            await ok()
            await send(response())
        elif policy == "conflict":
            await ok()
            fields = {"errorCode": "SESSION_BUSY", "errorContent": {"boundSmWsId": ELSEWHERE}}
            await send(response(ok=False, content=None, **fields))
        elif policy == "response-flood":
            ghosts = [response(reqId=f"{GHOST_REQ[:-6]}{i:06d}") for i in range(50)]
            await control.conn.send_many(ghosts)
            await ok()
        else:  # pragma: no cover - CLAIM_POLICIES and this method list the same policies
            raise AssertionError(policy)

    async def send_call_in(self, control: ControlSession, offer: Offer) -> None:
        """``call.in`` for ``offer`` (with its overrides, if any)."""
        if offer.call_in:
            fields = _call_in_fields(offer.session_id, offer.call_id, offer.url, offer.token)
            await control.conn.send(control_message("call.in", {**fields, **offer.call_in}))
            return
        msg = CallIn(
            session_id=offer.session_id,
            call_id=offer.call_id,
            url=offer.url,
            token=offer.token,
            org_uuid="org-hostile",
            from_number="+15550001",
            to_number="+15550002",
        )
        await control.push(msg)

    async def _ready(self, control: ControlSession, msg: SessionReady) -> None:
        offer = self.offers.get(msg.session_id)
        if offer is None:
            return
        offer.readies += 1
        policy = offer.policy
        if policy == "closed-instead":
            await self.close_session(control, offer.session_id, detail="CALL_UNANSWERED")
        elif policy == "bad-call.in":
            fields = _call_in_fields(offer.session_id, offer.call_id, offer.url, offer.token)
            kind, wire = _bad_call_in(offer.rng, fields)
            await control.conn.send(wire)
            count(f"call.in-{kind}", "control")
        elif policy == "odd-call.in":
            url = offer.rng.choice(UNUSABLE_URLS)
            fields = _call_in_fields(offer.session_id, offer.call_id, url, offer.token)
            await control.conn.send(control_message("call.in", fields))
            count("call.in-unusable-url", "control")
        elif policy == "closed-then-call.in":
            # One write: the client reads both before any other task of its runs.
            closed = encode_control(SessionClosed(offer.session_id, CloseReason.CALL_TERMINATED))
            fields = _call_in_fields(offer.session_id, offer.call_id, offer.url, offer.token)
            await control.conn.send_many([closed, control_message("call.in", fields)])
        elif policy == "two-call.in":
            # The first names a trap; the second a media URL this server would accept. A
            # client that took the second would get the call: it must stick to the first.
            trap = self.url(offer.rng.choice(QUICK_TRAPS))
            fields = _call_in_fields(offer.session_id, offer.call_id, trap, offer.token)
            await control.conn.send(control_message("call.in", fields))
            second = f"{offer.call_id}-second"
            usable = Offer(
                offer.session_id, second, url=self.url(f"{MEDIA_PREFIX}{second}"), token=offer.token
            )
            usable.token = secret_token(offer.rng)
            self._tokens[usable.token] = usable
            fields = _call_in_fields(offer.session_id, usable.call_id, usable.url, usable.token)
            await control.conn.send(control_message("call.in", fields))
            count("call.in-second", "control")
        elif policy not in (
            "silent",
            "no-answer",
            "late",
            "wrong-reqId",
            "missing-reqId",
            "odd-reqId",
            "closed-first",
            "early-call.in",
            "busy",
            "busy-odd-content",
            "busy-then-call.in",
        ):
            await self.send_call_in(control, offer)

    async def _serve_media(self, handshake: ServerHandshake, call_id: str) -> None:
        header = handshake.headers.get("authorization", "")
        offer = self._tokens.get(header.removeprefix("Bearer "))
        if not header.startswith("Bearer ") or offer is None or offer.call_id != call_id:
            await handshake.reject(401, "invalid media token")
            return
        if self.hold_media is not None:
            await self.hold_media.wait()
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
