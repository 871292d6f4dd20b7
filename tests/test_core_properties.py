"""Property tests: the core, fed arbitrary frames and orderings, fails only with protocol errors and
keeps its accounting invariants."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from telcoflow._core import (
    MAX_AUDIO_PAYLOAD_BYTES,
    AudioFrame,
    AudioMode,
    BufferRequest,
    CallEnded,
    CallErrorEvent,
    CallIncoming,
    CallState,
    CallTerminatedEvent,
    Command,
    CommandCompleted,
    CommandRequest,
    CommandResponse,
    ControlMessage,
    ControlProtocol,
    ErrorMessage,
    LocalProtocolError,
    MediaEvent,
    MediaProtocol,
    MessageIgnored,
    ProtocolError,
    RemoteProtocolError,
    Role,
    Setup,
    SetupDone,
    UnknownCallEvent,
    UnknownMessage,
    decode_control,
    decode_media,
    encode,
    state_after,
)
from telcoflow._core._codec import MAX_ID_CHARS, MAX_TIMEOUT_MS

SETTINGS = settings(max_examples=200, deadline=None, database=None)

# --- strategies for arbitrary input ---------------------------------------------------------------

KNOWN_TYPES = [
    "setup",
    "setup.done",
    "error",
    "call.incoming",
    "call.ended",
    "command",
    "command_response",
    "call_event",
    "buffer_request",
]

FIELD_NAMES = [
    "sampleRate",
    "audioMode",
    "connectionId",
    "code",
    "message",
    "callId",
    "from",
    "to",
    "direction",
    "mediaUrl",
    "mediaToken",
    "createdAt",
    "reason",
    "command_id",
    "command",
    "timeout_ms",
    "data",
    "success",
    "result",
    "error_code",
    "error_message",
    "event",
    "requested_bytes",
    "prefer_audio_frame_bytes",
    "channelId",
]

#: Values a frame is likely to contain, so that generated frames often get past the first check.
PLAUSIBLE = st.sampled_from(
    [
        0,
        1,
        2,
        -1,
        960,
        961,
        24000,
        8000,
        10_000,
        True,
        False,
        None,
        "",
        "c1",
        "c2",
        "mixed",
        "isolated",
        "call.terminated",
        "call.error",
        "call.answer",
        float("nan"),
        float("inf"),
        1.5,
    ]
)

#: Integers a float cannot hold: JSON allows them, and a decoder must refuse them cleanly.
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**1024])

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats()
    | st.text(max_size=20)
    | PLAUSIBLE
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

frame_data = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=10
)
frame_types = st.sampled_from(KNOWN_TYPES) | st.text(max_size=16)


def _dump(obj: Any) -> str:
    return json.dumps(obj)


shaped_frames = st.builds(
    lambda kind, data: _dump({"type": kind, "data": data}), frame_types, frame_data
) | st.builds(lambda kind, data: _dump({"type": kind, "data": data}), frame_types, json_values)
json_frames = st.builds(_dump, json_values)
any_frames = st.one_of(
    shaped_frames,
    json_frames,
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(lambda ch, n: bytes([ch]) + bytes(n), st.integers(0, 255), st.integers(0, 2000)),
)

CONTROL_RESULT = (Setup, SetupDone, ErrorMessage, CallIncoming, CallEnded, UnknownMessage)
assert set(CONTROL_RESULT) == set(ControlMessage.__args__)  # type: ignore[attr-defined]
MEDIA_RESULT: tuple[type, ...] = MediaEvent.__args__  # type: ignore[attr-defined]


def _control(role: Role, steps: int) -> ControlProtocol:
    """A control protocol of ``role`` moved ``steps`` (0..2) along the happy path."""
    client, server = ControlProtocol(Role.CLIENT), ControlProtocol(Role.SERVER)
    if steps >= 1:
        server.receive(client.send(Setup()))
    if steps >= 2:
        client.receive(server.send(SetupDone("conn-1")))
    return client if role is Role.CLIENT else server


def _media(role: Role, steps: int) -> MediaProtocol:
    """A media protocol of ``role`` with some commands open and some credit."""
    proto = MediaProtocol(role)
    if role is Role.CLIENT:
        for command in list(Command)[:steps]:
            proto.command(command, 10_000)
    else:
        proto.grant(960 * steps)
        for n in range(steps):
            proto.receive(encode(CommandRequest(f"c{n + 1}", "call.answer", 10_000)))
    return proto


def _check_received(proto: ControlProtocol | MediaProtocol, raw: str | bytes) -> None:
    error: ProtocolError | None = None
    try:
        result = proto.receive(raw)
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert isinstance(error, (RemoteProtocolError, LocalProtocolError))
        assert str(error)
        return
    expected = CONTROL_RESULT if isinstance(proto, ControlProtocol) else MEDIA_RESULT
    assert isinstance(result, expected)


roles = st.sampled_from(list(Role))
steps = st.integers(0, 2)
frame_lists = st.lists(any_frames, min_size=1, max_size=8)

#: A call.incoming whose createdAt no float can hold.
HUGE_CREATED_AT = _dump(
    {
        "type": "call.incoming",
        "data": {
            "callId": "x",
            "from": "1",
            "to": "2",
            "direction": "MT",
            "mediaUrl": "ws://h",
            "mediaToken": "t",
            "createdAt": 10**400,
        },
    }
)


@SETTINGS
@given(role=roles, steps=steps, frames=frame_lists)
@example(role=Role.CLIENT, steps=2, frames=[HUGE_CREATED_AT])
def test_control_receive_fails_only_with_protocol_errors(
    role: Role, steps: int, frames: list[str | bytes]
) -> None:
    proto = _control(role, steps)
    for raw in frames:
        _check_received(proto, raw)


@SETTINGS
@given(role=roles, steps=steps, frames=frame_lists)
def test_media_receive_fails_only_with_protocol_errors(
    role: Role, steps: int, frames: list[str | bytes]
) -> None:
    proto = _media(role, steps)
    for raw in frames:
        _check_received(proto, raw)
        assert proto.credit >= 0


@pytest.mark.parametrize("role", list(Role))
@SETTINGS
@given(raw=st.text() | st.binary())
def test_decoders_fail_only_with_protocol_errors(role: Role, raw: str | bytes) -> None:
    for decode in (decode_control, decode_media):
        with contextlib.suppress(RemoteProtocolError):
            decode(raw, role)


# --- a client media connection under arbitrary orderings of server frames -------------------------

REASONS = ["caller_hangup", "callee_hangup", "agent_close", "agent_disconnect", "media_lost"]

_OPERATIONS = {
    "command": st.tuples(st.just("command"), st.sampled_from(list(Command))),
    # Respond to the n-th command sent (modulo how many there are): usually an open one.
    "respond": st.tuples(st.just("respond"), st.integers(0, 20), st.booleans()),
    "respond_unknown": st.tuples(st.just("respond_unknown"), st.text(max_size=5), st.booleans()),
    "grant": st.tuples(
        st.just("grant"),
        st.integers(0, 5000),
        st.integers(1, 600).map(lambda n: 2 * n),
        st.sampled_from([0, 0, 0, 1, 2]),
    ),
    "take": st.tuples(st.just("take"), st.integers(0, 6000)),
    "terminated": st.tuples(st.just("terminated"), st.sampled_from(REASONS)),
    "call_error": st.just(("call_error",)),
    "unknown_event": st.just(("unknown_event",)),
    "audio": st.tuples(st.just("audio"), st.sampled_from([0, 1, 2]), st.integers(1, 500)),
    "forget": st.tuples(st.just("forget"), st.integers(0, 20)),
}
#: Kinds repeated to weigh them: commands, responses, grants and takes make the interesting
#: sequences; an early call.terminated would leave the rest of a sequence with little to do.
_WEIGHTED_KINDS = [
    *["command"] * 4,
    *["respond"] * 4,
    *["grant"] * 3,
    *["take"] * 3,
    "respond_unknown",
    "terminated",
    "call_error",
    "unknown_event",
    "audio",
    "forget",
]
operations = st.sampled_from(_WEIGHTED_KINDS).flatmap(_OPERATIONS.__getitem__)


def _allowed_after(before: CallState, event: Any) -> set[CallState]:
    """The states the client may be in after ``event``, given PROTOCOL.md's table."""
    if before is CallState.DISCONNECTED or isinstance(event, CallTerminatedEvent):
        return {CallState.DISCONNECTED}
    if isinstance(event, CommandCompleted) and event.response.success:
        states = {before}
        with contextlib.suppress(LocalProtocolError):
            states.add(state_after(before, event.command))
        # The server is the authority on close/disconnect: a success ends the call for the agent.
        if event.command in (Command.CLOSE, Command.DISCONNECT):
            states = {CallState.DISCONNECTED}
        return states
    return {before}


@SETTINGS
@given(ops=st.lists(operations, min_size=5, max_size=80))
def test_client_media_invariants_under_arbitrary_orderings(ops: list[tuple[Any, ...]]) -> None:
    proto = MediaProtocol(Role.CLIENT)
    buffer = bytearray()
    granted = taken = 0
    sent: dict[str, Command] = {}
    open_ids: set[str] = set()
    terminated = False

    for op in ops:
        before = proto.call_state
        event: Any = None
        match op:
            case ("command", command):
                if terminated:
                    with pytest.raises(LocalProtocolError):
                        proto.command(command, 10_000)
                    continue
                cid, _ = proto.command(command, 10_000)
                assert cid not in sent
                sent[cid] = command
                open_ids.add(cid)
            case ("respond", n, success) | ("respond_unknown", n, success):
                if isinstance(n, int):
                    cid = list(sent)[n % len(sent)] if sent else "c1"
                else:
                    cid = f"x{n}"
                event = proto.receive(
                    encode(CommandResponse(cid, success, None, None if success else "X"))
                )
                if cid in open_ids:
                    open_ids.discard(cid)
                    assert isinstance(event, CommandCompleted)
                    assert event.command is sent[cid]
                    assert event.state is proto.call_state
                else:
                    assert isinstance(event, MessageIgnored)
            case ("grant", requested, frame, channel):
                event = proto.receive(encode(BufferRequest(requested, frame, channel)))
                if channel == 0 and not terminated:
                    assert event == BufferRequest(requested, frame, 0)
                    granted += requested
                    assert proto.frame_bytes == frame
                else:
                    assert isinstance(event, MessageIgnored)
            case ("terminated", reason):
                event = proto.receive(encode(CallTerminatedEvent(reason)))
                assert event == CallTerminatedEvent(reason)
                terminated = True
                open_ids.clear()
            case ("call_error",):
                event = proto.receive(encode(CallErrorEvent("X", "y")))
                assert isinstance(event, CallErrorEvent)
            case ("unknown_event",):
                event = proto.receive(encode(UnknownCallEvent("call.hold")))
                assert isinstance(event, UnknownCallEvent)
            case ("audio", channel, samples):
                pcm = b"\x01\x00" * samples
                assert proto.receive(bytes([channel]) + pcm) == AudioFrame(channel, pcm)
            case ("take", more):
                buffer.extend(b"\x02\x00" * (more // 2) + b"\x03" * (more % 2))
                credit, queued, frame = proto.credit, len(buffer), proto.frame_bytes
                frames = proto.take_audio(buffer)
                payloads = [f[1:] for f in frames]
                total = sum(map(len, payloads))
                assert total == min(credit, queued) & ~1
                assert len(buffer) == queued - total
                assert all(f[:1] == b"\x00" for f in frames)
                assert all(len(p) % 2 == 0 and 0 < len(p) <= frame for p in payloads)
                assert all(len(p) == frame for p in payloads[:-1])
                taken += total
            case ("forget", n):
                cid = list(sent)[n % len(sent)] if sent else "c1"
                proto.forget_command(cid)
                open_ids.discard(cid)
            case _:  # pragma: no cover
                raise AssertionError(op)

        assert proto.credit >= 0
        assert taken <= granted
        if terminated:
            assert proto.credit == 0  # a terminated call sends nothing more
        else:
            assert proto.credit == granted - taken
        assert set(proto.open_command_ids()) == open_ids
        assert proto.terminated is terminated
        assert proto.call_state in _allowed_after(before, event)
        if terminated:
            assert proto.call_state is CallState.DISCONNECTED


# --- encode/decode round trips --------------------------------------------------------------------

ids = st.text(max_size=MAX_ID_CHARS // 4)  # \uXXXX escaping does not count: limits are on chars
short_text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)
plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | finite | short_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=8,
)
pcm = st.binary(min_size=2, max_size=400).map(lambda b: b[: len(b) & ~1])

client_control = st.one_of(
    st.builds(SetupDone, ids),
    st.builds(ErrorMessage, ids, ids),
    st.builds(CallIncoming, ids, ids, ids, ids, ids, ids, finite),
    st.builds(CallEnded, ids, ids),
    ids.filter(lambda t: t not in KNOWN_TYPES).map(UnknownMessage),
)
server_control = st.builds(Setup, st.sampled_from([8000, 16000, 24000]), st.sampled_from(AudioMode))
client_media = st.one_of(
    st.builds(
        CommandResponse, ids, st.booleans(), plain_json, st.none() | ids, st.none() | short_text
    ),
    st.builds(CallTerminatedEvent, ids),
    st.builds(CallErrorEvent, ids, ids),
    ids.filter(lambda e: e not in ("call.terminated", "call.error")).map(UnknownCallEvent),
    st.builds(
        BufferRequest,
        st.integers(0, 16 * 1024 * 1024),
        st.integers(1, MAX_AUDIO_PAYLOAD_BYTES // 2).map(lambda n: 2 * n),
        st.integers(0, 2**31),
    ),
    st.builds(AudioFrame, st.sampled_from([0, 1, 2]), pcm),
)
server_media = st.one_of(
    st.builds(
        CommandRequest,
        ids,
        st.sampled_from([c.value for c in Command]) | ids,
        st.integers(0, MAX_TIMEOUT_MS),
        st.none() | st.dictionaries(short_text, plain_json, max_size=3),
    ),
    st.builds(AudioFrame, st.just(0), pcm),
)


@SETTINGS
@given(msg=client_control)
def test_control_round_trip_client_receives(msg: Any) -> None:
    assert decode_control(encode(msg), Role.CLIENT) == msg
    client = _control(Role.CLIENT, 2)
    if not isinstance(msg, SetupDone):
        assert client.receive(encode(msg)) == msg


@SETTINGS
@given(msg=server_control)
def test_control_round_trip_server_receives(msg: Setup) -> None:
    assert decode_control(encode(msg), Role.SERVER) == msg
    assert ControlProtocol(Role.SERVER).receive(ControlProtocol(Role.CLIENT).send(msg)) == msg


@SETTINGS
@given(msg=client_media)
def test_media_round_trip_client_receives(msg: Any) -> None:
    assert decode_media(encode(msg), Role.CLIENT) == msg


@SETTINGS
@given(msg=server_media)
def test_media_round_trip_server_receives(msg: Any) -> None:
    assert decode_media(encode(msg), Role.SERVER) == msg


@SETTINGS
@given(
    kind=st.text(alphabet=string.ascii_lowercase + "._", max_size=30).filter(
        lambda k: k not in KNOWN_TYPES
    )
)
def test_unknown_types_round_trip_for_both_roles(kind: str) -> None:
    for role in Role:
        for decode in (decode_control, decode_media):
            assert decode(encode(UnknownMessage(kind)), role) == UnknownMessage(kind)
