"""MediaProtocol in both roles, driven with whole messages and no I/O: command correlation, the
agent's view of the call, and pooled credit (PROTOCOL.md "Media plane"; hosted-1.0.0.md §3)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from telcoflow._core import (
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_TIMEOUT_MS,
    AgentAudioReceived,
    AudioFrame,
    BufferRequest,
    CallErrorEvent,
    CallState,
    CallTerminatedEvent,
    Command,
    CommandCompleted,
    CommandRequest,
    CommandResponse,
    LocalProtocolError,
    MediaProtocol,
    MessageIgnored,
    RemoteProtocolError,
    Role,
    UnknownCallEvent,
    UnknownMessage,
    encode_media,
)

from ._support import counter, grant, respond, short


def client(**kw: Any) -> MediaProtocol:
    return MediaProtocol(Role.CLIENT, **kw)


def server(**kw: Any) -> MediaProtocol:
    return MediaProtocol(Role.SERVER, **kw)


def raw_grant(**data: Any) -> str:
    return json.dumps({"type": "buffer_request", "data": data})


def raw_response(**data: Any) -> str:
    return json.dumps({"type": "command_response", "data": data})


# --- client: commands -----------------------------------------------------------------------------


def test_client_starts_pending_without_credit() -> None:
    proto = client()
    assert proto.call_state is CallState.PENDING
    assert proto.credit == 0
    assert proto.frame_bytes == 960
    assert proto.open_command_ids() == []
    assert not proto.terminated


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (16000, 640), (24000, 960)])
def test_default_frame_size_follows_the_sample_rate(rate: int, frame: int) -> None:
    assert client(sample_rate=rate).frame_bytes == frame
    assert server(sample_rate=rate).frame_bytes == frame


def test_command_ids_are_uuid4_by_default() -> None:
    proto = client()
    ids = [proto.command(Command.INTERRUPT, 10_000)[0] for _ in range(100)]
    assert len(set(ids)) == 100
    assert sorted(proto.open_command_ids()) == sorted(ids)
    for command_id in ids:
        parsed = uuid.UUID(command_id)
        assert parsed.version == 4
        assert str(parsed) == command_id


def test_command_ids_are_injectable() -> None:
    proto = client(new_id=counter("c"))
    assert proto.command(Command.ANSWER, 10_000) == (
        "c1",
        '{"type": "command", "data": {"command_id": "c1", "command": "call.answer", '
        '"timeout_ms": 10000}}',
    )
    cid, text = proto.command(Command.CONNECT, 60_000, {"ringTimeSeconds": 60})
    assert cid == "c2"
    assert json.loads(text)["data"] == {
        "command_id": "c2",
        "command": "call.connect",
        "timeout_ms": 60_000,
        "data": {"ringTimeSeconds": 60},
    }
    assert proto.open_command_ids() == ["c1", "c2"]


def test_a_command_id_still_open_is_not_sent_again() -> None:
    proto = client(new_id=lambda: "same")
    proto.command(Command.ANSWER, 10_000)
    with pytest.raises(LocalProtocolError, match="same"):
        proto.command(Command.INTERRUPT, 10_000)
    assert proto.open_command_ids() == ["same"]


@pytest.mark.parametrize("timeout_ms", [0, -1, MAX_TIMEOUT_MS + 1])
def test_command_timeout_must_be_in_range(timeout_ms: int) -> None:
    proto = client()
    with pytest.raises(LocalProtocolError, match="timeout_ms"):
        proto.command(Command.ANSWER, timeout_ms)
    assert proto.open_command_ids() == []


def test_command_timeout_bounds_are_accepted() -> None:
    proto = client()
    proto.command(Command.CONNECT, MAX_TIMEOUT_MS)
    proto.command(Command.ANSWER, 1)
    assert len(proto.open_command_ids()) == 2


def test_response_is_correlated_by_id() -> None:
    proto = client()
    answer_id, _ = proto.command(Command.ANSWER, 10_000)
    interrupt_id, _ = proto.command(Command.INTERRUPT, 10_000)
    first = proto.receive(respond(interrupt_id))
    assert isinstance(first, CommandCompleted)
    assert first.command is Command.INTERRUPT
    assert first.state is CallState.PENDING
    second = proto.receive(respond(answer_id, result={"ok": 1}))
    assert second == CommandCompleted(
        Command.ANSWER, CommandResponse(answer_id, True, {"ok": 1}), CallState.ANSWERED
    )
    assert proto.open_command_ids() == []


@pytest.mark.parametrize(
    ("path", "final"),
    [
        ([Command.ANSWER], CallState.ANSWERED),
        ([Command.CONNECT], CallState.CONNECTED),
        ([Command.ANSWER, Command.CONNECT], CallState.CONNECTED),
        ([Command.CONNECT, Command.WHISPER, Command.SPY, Command.BARGE], CallState.CONNECTED),
        ([Command.INTERRUPT], CallState.PENDING),
        ([Command.DISCONNECT], CallState.DISCONNECTED),
        ([Command.ANSWER, Command.CLOSE], CallState.DISCONNECTED),
        ([Command.ANSWER, Command.DISCONNECT], CallState.DISCONNECTED),
        # The agent's view: close in CONNECTED takes it out, though the call goes on.
        ([Command.CONNECT, Command.CLOSE], CallState.DISCONNECTED),
        ([Command.ANSWER, Command.CONNECT, Command.CLOSE], CallState.DISCONNECTED),
        ([Command.ANSWER, Command.CONNECT, Command.DISCONNECT], CallState.DISCONNECTED),
    ],
    ids=lambda v: "-".join(c.name for c in v) if isinstance(v, list) else str(v),
)
def test_successful_commands_update_the_agents_view(path: list[Command], final: CallState) -> None:
    proto = client()
    for command in path:
        cid, _ = proto.command(command, 10_000)
        event = proto.receive(respond(cid))
        assert isinstance(event, CommandCompleted)
        assert event.state is proto.call_state
    assert proto.call_state is final
    # The call is only over once the server says call.terminated.
    assert not proto.terminated


@pytest.mark.parametrize(
    ("setup", "command", "code"),
    [
        ([], Command.CONNECT, "CALL_UNANSWERED"),
        ([Command.ANSWER], Command.CONNECT, "CALL_REJECTED"),
        ([], Command.CLOSE, "INVALID_STATE"),
        ([Command.ANSWER], Command.CLOSE, "TIMEOUT"),
        ([Command.CONNECT], Command.DISCONNECT, "CALL_TERMINATED"),
    ],
)
def test_failed_command_leaves_state(setup: list[Command], command: Command, code: str) -> None:
    proto = client()
    for step in setup:
        proto.receive(respond(proto.command(step, 10_000)[0]))
    before = proto.call_state
    cid, _ = proto.command(command, 10_000)
    event = proto.receive(respond(cid, False, error_code=code, error_message="no"))
    assert isinstance(event, CommandCompleted)
    assert event.response.error_code == code
    assert event.state is before
    assert proto.call_state is before


@pytest.mark.parametrize(
    ("success", "state"),
    [("yes", CallState.ANSWERED), (1, CallState.ANSWERED), (0, CallState.PENDING)],
    ids=short,
)
def test_success_is_read_as_a_truth_value(success: Any, state: CallState) -> None:
    proto = client()
    cid, _ = proto.command(Command.ANSWER, 10_000)
    event = proto.receive(raw_response(command_id=cid, success=success, error_code=404))
    assert isinstance(event, CommandCompleted)
    assert event.response.success is bool(success)
    assert event.response.error_code == "404"
    assert proto.call_state is state


def test_success_outside_the_table_keeps_state() -> None:
    # The server is the authority; a success our table cannot place keeps our state.
    proto = client()
    cid, _ = proto.command(Command.WHISPER, 10_000)
    event = proto.receive(respond(cid))
    assert isinstance(event, CommandCompleted)
    assert proto.call_state is CallState.PENDING


def test_disconnected_stays_disconnected_on_late_successes() -> None:
    proto = client()
    answer, _ = proto.command(Command.ANSWER, 10_000)
    disconnect, _ = proto.command(Command.DISCONNECT, 10_000)
    proto.receive(respond(disconnect))
    assert proto.call_state is CallState.DISCONNECTED
    proto.receive(respond(answer))
    assert proto.call_state is CallState.DISCONNECTED


def test_unknown_command_id_is_ignored() -> None:
    proto = client()
    proto.command(Command.ANSWER, 10_000)
    event = proto.receive(respond("nope"))
    assert isinstance(event, MessageIgnored)
    assert "'nope'" in event.reason
    assert len(proto.open_command_ids()) == 1
    assert proto.call_state is CallState.PENDING


def test_late_response_after_forget_is_ignored() -> None:
    proto = client()
    cid, _ = proto.command(Command.ANSWER, 10_000)
    proto.forget_command(cid)
    assert proto.open_command_ids() == []
    assert isinstance(proto.receive(respond(cid)), MessageIgnored)
    assert proto.call_state is CallState.PENDING
    proto.forget_command(cid)  # idempotent
    proto.forget_command("never-sent")


def test_second_response_to_one_command_is_ignored() -> None:
    proto = client()
    cid, _ = proto.command(Command.ANSWER, 10_000)
    assert isinstance(proto.receive(respond(cid)), CommandCompleted)
    assert isinstance(proto.receive(respond(cid, False, error_code="X")), MessageIgnored)
    assert proto.call_state is CallState.ANSWERED


# --- client: credit -------------------------------------------------------------------------------


def test_buffer_request_grants_credit() -> None:
    proto = client()
    assert proto.receive(grant(4800, 640)) == BufferRequest(4800, 640, 0)
    assert proto.credit == 4800
    assert proto.frame_bytes == 640
    proto.receive(grant(960, 960))
    assert proto.credit == 5760
    assert proto.frame_bytes == 960


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@pytest.mark.parametrize("prefer", ["missing", 0, None, 1, "0", "x"], ids=short)
def test_without_a_preference_frames_are_20_ms_at_our_rate(rate: int, prefer: Any) -> None:
    proto = client(sample_rate=rate)
    data: dict[str, Any] = {"requested_bytes": 4000}
    if prefer != "missing":
        data["prefer_audio_frame_bytes"] = prefer
    proto.receive(raw_grant(prefer_audio_frame_bytes=480, requested_bytes=10))
    assert proto.frame_bytes == 480
    proto.receive(raw_grant(**data))
    assert proto.frame_bytes == rate // 25  # 20 ms of PCM16 mono
    assert proto.credit == 4010


def test_odd_and_huge_preferences_become_even_and_clamped() -> None:
    proto = client()
    proto.receive(raw_grant(requested_bytes=10, prefer_audio_frame_bytes=641))
    assert proto.frame_bytes == 640
    proto.receive(raw_grant(requested_bytes=10, prefer_audio_frame_bytes=10**9))
    assert proto.frame_bytes == MAX_AUDIO_PAYLOAD_BYTES


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"requested_bytes": 0, "prefer_audio_frame_bytes": 320},
        {"requested_bytes": -960},
        {"requested_bytes": None},
        {"requested_bytes": "none"},
        {"requested_bytes": "0"},
        {"requested_bytes": 960.5},
        {"prefer_audio_frame_bytes": 320, "channelId": 0},
    ],
    ids=short,
)
def test_a_grant_of_no_bytes_is_ignored(data: dict[str, Any]) -> None:
    proto = client()
    proto.receive(grant(100, 480))
    event = proto.receive(raw_grant(**data))
    assert isinstance(event, MessageIgnored)
    assert "no bytes" in event.reason
    assert proto.credit == 100
    assert proto.frame_bytes == 480  # an ignored grant changes nothing


def test_whole_float_grants_are_accepted() -> None:
    proto = client()
    event = proto.receive(raw_grant(requested_bytes=960.0, prefer_audio_frame_bytes=320.0))
    assert event == BufferRequest(960, 320, 0)
    assert (proto.credit, proto.frame_bytes) == (960, 320)


def test_a_grant_beyond_the_bound_is_refused_and_changes_nothing() -> None:
    proto = client()
    proto.receive(grant(MAX_CREDIT_GRANT_BYTES, 480))
    with pytest.raises(RemoteProtocolError, match="MAX_CREDIT_GRANT_BYTES"):
        proto.receive(raw_grant(requested_bytes=MAX_CREDIT_GRANT_BYTES + 1))
    assert proto.credit == MAX_CREDIT_GRANT_BYTES
    assert proto.frame_bytes == 480


@pytest.mark.parametrize("channel", [1, 2, 7, -1])
def test_credit_for_another_channel_is_ignored(channel: int) -> None:
    proto = client()
    event = proto.receive(grant(4800, 640, channel))
    assert isinstance(event, MessageIgnored)
    assert str(channel) in event.reason
    assert proto.credit == 0
    assert proto.frame_bytes == 960


def test_take_audio_without_credit_takes_nothing() -> None:
    proto = client()
    buffer = bytearray(b"\x01\x00" * 100)
    assert proto.take_audio(buffer) == []
    assert len(buffer) == 200


def test_take_audio_never_exceeds_credit() -> None:
    proto = client()
    proto.receive(grant(1000, 320))
    pcm = bytes(range(256)) * 8  # 2048 bytes
    buffer = bytearray(pcm)
    frames = proto.take_audio(buffer)
    assert [len(f) for f in frames] == [321, 321, 321, 41]
    assert all(f[:1] == b"\x00" for f in frames)
    assert b"".join(f[1:] for f in frames) == pcm[:1000]
    assert bytes(buffer) == pcm[1000:]
    assert proto.credit == 0
    assert proto.take_audio(buffer) == []
    assert bytes(buffer) == pcm[1000:]


def test_take_audio_sends_all_it_has_with_a_shorter_last_frame() -> None:
    proto = client()
    proto.receive(grant(48_000, 960))
    buffer = bytearray(b"\x05\x00" * 1000)  # 2000 bytes
    frames = proto.take_audio(buffer)
    assert [len(f) - 1 for f in frames] == [960, 960, 80]
    assert all(isinstance(f, bytes) for f in frames)
    assert buffer == bytearray()
    assert proto.credit == 46_000


def test_take_audio_whole_frames_exactly() -> None:
    proto = client()
    proto.receive(grant(1920, 960))
    assert proto.take_audio(bytearray(1920)) == [b"\x00" + bytes(960)] * 2


def test_take_audio_cuts_20_ms_frames_when_the_server_prefers_none() -> None:
    proto = client(sample_rate=8000)
    proto.receive(raw_grant(requested_bytes=1000))
    assert [len(f) - 1 for f in proto.take_audio(bytearray(1000))] == [320, 320, 320, 40]


def test_take_audio_sends_only_whole_samples() -> None:
    proto = client()
    proto.receive(grant(100, 960))
    buffer = bytearray(b"\x01\x02\x03\x04\x05")  # two samples and half of one
    assert proto.take_audio(buffer) == [b"\x00\x01\x02\x03\x04"]
    assert buffer == bytearray(b"\x05")
    assert proto.credit == 96
    assert proto.take_audio(buffer) == []
    assert buffer == bytearray(b"\x05")


def test_odd_credit_is_used_in_whole_samples() -> None:
    proto = client()
    proto.receive(grant(7, 960))
    buffer = bytearray(20)
    assert proto.take_audio(buffer) == [b"\x00" + bytes(6)]
    assert proto.credit == 1
    assert proto.take_audio(buffer) == []
    proto.receive(grant(1, 960))
    assert proto.take_audio(buffer) == [b"\x00" + bytes(2)]
    assert proto.credit == 0
    assert len(buffer) == 12


def test_take_audio_max_frames() -> None:
    proto = client()
    proto.receive(grant(10_000, 320))
    buffer = bytearray(5000)
    frames = proto.take_audio(buffer, max_frames=3)
    assert [len(f) - 1 for f in frames] == [320, 320, 320]
    assert len(buffer) == 5000 - 960
    assert proto.credit == 10_000 - 960
    assert proto.take_audio(buffer, max_frames=0) == []
    assert len(buffer) == 5000 - 960
    # Fewer bytes than max_frames frames: a shorter last frame, as without the bound.
    assert [len(f) - 1 for f in proto.take_audio(bytearray(700), max_frames=5)] == [320, 320, 60]


def test_a_server_asking_for_tiny_frames_cannot_flood_one_take() -> None:
    proto = client()
    proto.receive(grant(100_000, 2))
    frames = proto.take_audio(bytearray(100_000), max_frames=50)
    assert len(frames) == 50
    assert all(len(f) == 3 for f in frames)
    assert proto.credit == 100_000 - 100


# --- client: the end of the call ------------------------------------------------------------------


def test_call_terminated_ends_the_call() -> None:
    proto = client()
    proto.receive(grant(960))
    answer, _ = proto.command(Command.ANSWER, 10_000)
    event = proto.receive(encode_media(CallTerminatedEvent("caller_hangup")))
    assert event == CallTerminatedEvent("caller_hangup")
    assert proto.terminated
    assert proto.call_state is CallState.DISCONNECTED
    assert proto.credit == 0
    assert proto.open_command_ids() == []
    assert isinstance(proto.receive(respond(answer)), MessageIgnored)
    assert proto.call_state is CallState.DISCONNECTED
    with pytest.raises(LocalProtocolError, match="terminated"):
        proto.command(Command.ANSWER, 10_000)


def test_call_terminated_without_a_reason_is_unknown() -> None:
    proto = client()
    event = proto.receive('{"type":"call_event","data":{"event":"call.terminated"}}')
    assert event == CallTerminatedEvent("unknown")
    assert proto.terminated


def test_terminate_locally() -> None:
    proto = client()
    proto.receive(grant(9600, 640))
    cid, _ = proto.command(Command.ANSWER, 10_000)
    proto.terminate_locally()
    assert proto.terminated
    assert proto.call_state is CallState.DISCONNECTED
    assert proto.credit == 0
    assert proto.open_command_ids() == []
    buffer = bytearray(1000)
    assert proto.take_audio(buffer) == []
    assert len(buffer) == 1000
    event = proto.receive(grant(960))
    assert isinstance(event, MessageIgnored)
    assert "after call.terminated" in event.reason
    assert proto.credit == 0
    assert isinstance(proto.receive(respond(cid)), MessageIgnored)
    with pytest.raises(LocalProtocolError, match="terminated"):
        proto.command(Command.DISCONNECT, 10_000)
    # Audio and events still decode: the connection may deliver what was in flight.
    assert proto.receive(b"\x00\x01\x00") == AudioFrame(0, b"\x01\x00")
    proto.terminate_locally()  # idempotent
    assert proto.call_state is CallState.DISCONNECTED


def test_call_error_and_unknown_events_change_nothing() -> None:
    proto = client()
    assert proto.receive(encode_media(CallErrorEvent("X", "y"))) == CallErrorEvent(
        "X", "y", {"error_code": "X", "error_message": "y", "message": "y"}
    )
    event = proto.receive('{"type":"call_event","data":{"event":"call.error","message":"m"}}')
    assert event == CallErrorEvent(None, "m", {"message": "m"})
    assert proto.receive('{"type":"call_event","data":{"event":"call.hold"}}') == (
        UnknownCallEvent("call.hold")
    )
    assert proto.receive('{"type":"stats","data":{}}') == UnknownMessage("stats")
    assert proto.call_state is CallState.PENDING
    assert not proto.terminated


# --- client: audio --------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [0, 1, 2, 7, 255])
def test_client_receives_audio_on_any_channel(channel: int) -> None:
    proto = client()
    assert proto.receive(bytes([channel]) + b"\x01\x00" * 480) == AudioFrame(
        channel, b"\x01\x00" * 480
    )
    assert proto.receive(bytes([channel]) + b"\x01") == AudioFrame(channel, b"\x01")


@pytest.mark.parametrize(
    "raw", [b"", b"\x00", b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 1)], ids=lambda b: f"{len(b)}B"
)
def test_client_refuses_malformed_audio(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        client().receive(raw)


def test_client_ignores_a_command_from_the_server() -> None:
    proto = client()
    assert proto.receive(encode_media(CommandRequest("x", "call.answer", 1))) == UnknownMessage(
        "command"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.grant(960),
        lambda p: p.respond("c1", True),
        lambda p: p.terminate("agent_close"),
        lambda p: p.call_error("TTS_SESSION_ERROR"),
    ],
    ids=["grant", "respond", "terminate", "call_error"],
)
def test_client_may_not_use_server_operations(call: Callable[[MediaProtocol], object]) -> None:
    with pytest.raises(LocalProtocolError, match="only the server"):
        call(client())


# --- server ---------------------------------------------------------------------------------------


def command_text(command_id: str, command: str = "call.answer") -> str:
    return encode_media(CommandRequest(command_id, command, 10_000))


def test_server_may_not_send_commands() -> None:
    with pytest.raises(LocalProtocolError, match="only the client"):
        server().command(Command.ANSWER, 10_000)


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (16000, 640), (24000, 960)])
def test_server_grant(rate: int, frame: int) -> None:
    proto = server(sample_rate=rate)
    assert proto.grant(4800) == (
        '{"type":"buffer_request","data":{"requested_bytes":4800,'
        f'"prefer_audio_frame_bytes":{frame},"channelId":0}}}}'
    )
    assert proto.credit == 4800
    proto.grant(200)
    assert proto.credit == 5000


def test_server_grant_bounds() -> None:
    proto = server()
    for bad in (-1, MAX_CREDIT_GRANT_BYTES + 1):
        with pytest.raises(LocalProtocolError, match="a grant must be within"):
            proto.grant(bad)
    assert proto.credit == 0
    proto.grant(0)
    proto.grant(MAX_CREDIT_GRANT_BYTES)
    assert proto.credit == MAX_CREDIT_GRANT_BYTES


def test_a_grant_on_another_channel_is_not_agent_credit() -> None:
    srv, cli = server(), client()
    event = cli.receive(srv.grant(960, channel_id=1))
    assert isinstance(event, MessageIgnored)
    assert srv.credit == cli.credit == 0


@pytest.mark.parametrize("rate", [0, 10, 44100])
def test_media_protocol_refuses_a_sample_rate_outside_the_protocol(rate: int) -> None:
    with pytest.raises((ValueError, LocalProtocolError)):
        client(sample_rate=rate)


def test_server_receives_and_responds() -> None:
    proto = server()
    assert proto.receive(command_text("c1")) == CommandRequest("c1", "call.answer", 10_000)
    assert proto.open_command_ids() == ["c1"]
    assert proto.respond("c1", True, {"state": "ANSWERED"}) == (
        '{"type":"command_response","data":{"command_id":"c1","success":true,'
        '"result":{"state":"ANSWERED"},"error_code":null,"error_message":null}}'
    )
    assert proto.open_command_ids() == []


def test_server_failure_response() -> None:
    proto = server()
    proto.receive(command_text("c9", "call.connect"))
    text = proto.respond("c9", False, error_code="CALL_REJECTED", error_message="busy")
    assert json.loads(text)["data"] == {
        "command_id": "c9",
        "success": False,
        "result": None,
        "error_code": "CALL_REJECTED",
        "error_message": "busy",
    }


def test_server_responds_once_per_command() -> None:
    proto = server()
    proto.receive(command_text("c1"))
    proto.respond("c1", True)
    with pytest.raises(LocalProtocolError, match="'c1' is not open"):
        proto.respond("c1", True)
    with pytest.raises(LocalProtocolError, match="'never' is not open"):
        proto.respond("never", False, error_code="X")


def test_reused_open_command_id_is_a_remote_error() -> None:
    proto = server()
    proto.receive(command_text("c1"))
    with pytest.raises(RemoteProtocolError, match="'c1' reused while open"):
        proto.receive(command_text("c1", "call.connect"))
    assert proto.open_command_ids() == ["c1"]
    proto.respond("c1", True)
    # Once answered, an id may come again (ids need only be unique among open commands here).
    again = proto.receive(command_text("c1"))
    assert isinstance(again, CommandRequest)
    assert again.command_id == "c1"


def test_server_accepts_unknown_command_names_for_a_response() -> None:
    proto = server()
    request = proto.receive(command_text("c1", "call.teleport"))
    assert isinstance(request, CommandRequest)
    assert request.command == "call.teleport"
    proto.respond("c1", False, error_code="INVALID_COMMAND")


def test_server_refuses_a_malformed_command_and_opens_nothing() -> None:
    proto = server()
    with pytest.raises(RemoteProtocolError, match="timeout_ms"):
        proto.receive('{"type":"command","data":{"command_id":"c1","command":"call.answer"}}')
    assert proto.open_command_ids() == []


def test_server_terminate_and_call_error() -> None:
    proto = server()
    assert proto.terminate("agent_disconnect") == (
        '{"type":"call_event","data":{"event":"call.terminated","reason":"agent_disconnect"}}'
    )
    assert proto.terminated
    assert json.loads(proto.call_error("TTS_SESSION_ERROR", "clone failed"))["data"] == {
        "event": "call.error",
        "error_code": "TTS_SESSION_ERROR",
        "error_message": "clone failed",
        "message": "clone failed",
    }


def test_agent_audio_within_credit() -> None:
    proto = server()
    proto.grant(1920)
    event = proto.receive(b"\x00" + b"\x01\x00" * 480)
    assert event == AgentAudioReceived(b"\x01\x00" * 480, 0)
    assert proto.credit == 960


def test_agent_audio_beyond_credit_is_cut_and_counted() -> None:
    proto = server()
    proto.grant(400)
    pcm = bytes(range(200)) * 3  # 600 bytes
    assert proto.receive(b"\x00" + pcm) == AgentAudioReceived(pcm[:400], 200)
    assert proto.credit == 0
    assert proto.receive(b"\x00" + pcm[:2]) == AgentAudioReceived(b"", 2)
    assert proto.credit == 0


def test_odd_agent_frames_are_counted_per_byte() -> None:
    # Agent audio is a byte stream; the server counts bytes, not samples.
    proto = server()
    proto.grant(5)
    assert proto.receive(b"\x00\x01\x02\x03") == AgentAudioReceived(b"\x01\x02\x03", 0)
    assert proto.receive(b"\x00\x04\x05\x06") == AgentAudioReceived(b"\x04\x05", 1)
    assert proto.credit == 0


def test_a_whole_grant_may_come_in_one_frame() -> None:
    # The official client sends what it has buffered, up to the whole grant, in one frame.
    proto = server()
    proto.grant(9600)
    assert proto.receive(b"\x00" + bytes(9600)) == AgentAudioReceived(bytes(9600), 0)


@pytest.mark.parametrize("channel", [1, 2, 9])
def test_agent_audio_on_another_channel_is_a_remote_error(channel: int) -> None:
    proto = server()
    proto.grant(960)
    with pytest.raises(RemoteProtocolError, match=f"channel {channel}"):
        proto.receive(bytes([channel]) + bytes(960))
    assert proto.credit == 960


def test_server_refuses_malformed_audio() -> None:
    with pytest.raises(RemoteProtocolError, match="has no audio"):
        server().receive(b"\x00")


def test_server_ignores_client_frames_from_the_server_side() -> None:
    proto = server()
    assert proto.receive(grant(960)) == UnknownMessage("buffer_request")
    assert proto.receive(respond("c1")) == UnknownMessage("command_response")
    assert proto.credit == 0
    assert proto.open_command_ids() == []


# --- both ends together ---------------------------------------------------------------------------


def test_media_client_and_server_agree_end_to_end() -> None:
    cli, srv = client(), server()
    cid, text = cli.command(Command.ANSWER, 10_000)
    request = srv.receive(text)
    assert isinstance(request, CommandRequest)
    assert request.command_id == cid
    completed = cli.receive(srv.respond(request.command_id, True))
    assert isinstance(completed, CommandCompleted)
    assert completed.response.command_id == cid
    assert cli.call_state is CallState.ANSWERED

    assert cli.receive(srv.grant(4800)) == BufferRequest(4800, 960, 0)
    buffer = bytearray(b"\x02\x00" * 4000)  # 8000 bytes queued, 4800 allowed
    for frame in cli.take_audio(buffer):
        event = srv.receive(frame)
        assert isinstance(event, AgentAudioReceived)
        assert event.excess_bytes == 0
    assert cli.credit == srv.credit == 0
    assert len(buffer) == 3200

    connect, text = cli.command(Command.CONNECT, 60_000, {"ringTimeSeconds": 60})
    srv.receive(text)
    connected = cli.receive(srv.respond(connect, True))
    assert isinstance(connected, CommandCompleted)
    assert connected.state is CallState.CONNECTED
    close, text = cli.command(Command.CLOSE, 10_000)
    srv.receive(text)
    event = cli.receive(srv.respond(close, True))
    assert isinstance(event, CommandCompleted)
    assert event.state is CallState.DISCONNECTED

    assert cli.receive(srv.terminate("agent_close")) == CallTerminatedEvent("agent_close")
    assert cli.terminated
    assert srv.terminated
