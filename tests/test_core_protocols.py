"""ControlProtocol and MediaProtocol in both roles, driven with whole messages and no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telcoflow._core import (
    AgentAudioReceived,
    AudioFrame,
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
    ControlProtocol,
    ControlState,
    ErrorMessage,
    LocalProtocolError,
    MediaProtocol,
    MessageIgnored,
    RemoteProtocolError,
    Role,
    Setup,
    SetupDone,
    UnknownCallEvent,
    UnknownMessage,
    encode,
)
from telcoflow._core._codec import MAX_TIMEOUT_MS

INCOMING = CallIncoming("call-1", "+1555", "+1666", "MT", "ws://h/media/1", "tok", 1.5)


def wire(msg: Any) -> str | bytes:
    return encode(msg)


# --- control plane: client ------------------------------------------------------------------------


def ready_client() -> ControlProtocol:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    proto.receive(wire(SetupDone("conn-1")))
    assert proto.state is ControlState.READY
    return proto


def test_client_sends_setup_first() -> None:
    proto = ControlProtocol(Role.CLIENT)
    assert proto.state is ControlState.IDLE
    text = proto.send(Setup(16000, "isolated"))
    assert json.loads(text) == {
        "type": "setup",
        "data": {"sampleRate": 16000, "audioMode": "isolated"},
    }
    assert proto.state is ControlState.SETUP


def test_client_may_not_send_setup_twice() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    with pytest.raises(LocalProtocolError, match=r"client may not send Setup .* state SETUP"):
        proto.send(Setup())
    assert proto.state is ControlState.SETUP


@pytest.mark.parametrize(
    "msg", [SetupDone("c"), ErrorMessage("X", "y"), INCOMING, CallEnded("call-1", "r")]
)
def test_client_may_not_send_server_frames(msg: Any) -> None:
    proto = ControlProtocol(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match=type(msg).__name__):
        proto.send(msg)
    assert proto.state is ControlState.IDLE


def test_client_setup_done_makes_it_ready() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    assert proto.receive(wire(SetupDone("conn-1"))) == SetupDone("conn-1")
    assert proto.state is ControlState.READY


def test_call_incoming_before_setup_done_is_a_remote_error() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    with pytest.raises(RemoteProtocolError) as info:
        proto.receive(wire(INCOMING))
    text = str(info.value)
    assert "CallIncoming" in text
    assert "SETUP" in text
    assert "server may not send" in text
    assert proto.state is ControlState.SETUP


@pytest.mark.parametrize("msg", [SetupDone("c"), INCOMING, CallEnded("call-1", "r")])
def test_client_receiving_before_sending_setup_is_a_remote_error(msg: Any) -> None:
    proto = ControlProtocol(Role.CLIENT)
    with pytest.raises(RemoteProtocolError, match="IDLE"):
        proto.receive(wire(msg))
    assert proto.state is ControlState.IDLE


def test_setup_refused_closes() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    msg = proto.receive(wire(ErrorMessage("UNSUPPORTED_SAMPLE_RATE", "use 24000")))
    assert msg == ErrorMessage("UNSUPPORTED_SAMPLE_RATE", "use 24000")
    assert proto.state is ControlState.CLOSED


def test_ready_client_receives_offers_and_errors() -> None:
    proto = ready_client()
    assert proto.receive(wire(INCOMING)) == INCOMING
    assert proto.receive(wire(CallEnded("call-1", "caller_hangup"))) == CallEnded(
        "call-1", "caller_hangup"
    )
    assert proto.receive(wire(ErrorMessage("X", "y"))) == ErrorMessage("X", "y")
    assert proto.state is ControlState.READY


def test_second_setup_done_is_a_remote_error() -> None:
    proto = ready_client()
    with pytest.raises(RemoteProtocolError, match="SetupDone"):
        proto.receive(wire(SetupDone("again")))
    assert proto.state is ControlState.READY


def test_unknown_types_pass_in_any_state() -> None:
    proto = ControlProtocol(Role.CLIENT)
    raw = '{"type":"maintenance","data":{"at":5}}'
    assert proto.receive(raw) == UnknownMessage("maintenance")
    assert proto.state is ControlState.IDLE
    proto.close()
    assert proto.receive(raw) == UnknownMessage("maintenance")
    assert proto.state is ControlState.CLOSED


def test_malformed_frame_leaves_state() -> None:
    proto = ready_client()
    with pytest.raises(RemoteProtocolError):
        proto.receive('{"type":"call.incoming","data":{"callId":1}}')
    with pytest.raises(RemoteProtocolError):
        proto.receive(b"\x00\x00\x00")
    assert proto.state is ControlState.READY
    assert proto.receive(wire(INCOMING)) == INCOMING


def test_nothing_flows_after_close() -> None:
    proto = ready_client()
    proto.close()
    assert proto.state is ControlState.CLOSED
    with pytest.raises(RemoteProtocolError, match="CLOSED"):
        proto.receive(wire(INCOMING))
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        proto.send(Setup())


# --- control plane: server ------------------------------------------------------------------------


def test_server_receives_setup() -> None:
    proto = ControlProtocol(Role.SERVER)
    assert proto.receive(wire(Setup(8000, "isolated"))) == Setup(8000, "isolated")
    assert proto.state is ControlState.SETUP


@pytest.mark.parametrize("msg", [SetupDone("c"), INCOMING, CallEnded("call-1", "r")])
def test_server_cannot_answer_before_a_setup(msg: Any) -> None:
    proto = ControlProtocol(Role.SERVER)
    with pytest.raises(LocalProtocolError, match=r"server may not send .* state IDLE"):
        proto.send(msg)
    assert proto.state is ControlState.IDLE


def test_server_may_refuse_a_connection_before_any_setup() -> None:
    # A first frame that is not a valid setup is answered with an error, then a close.
    server = ControlProtocol(Role.SERVER)
    text = server.send(ErrorMessage("INVALID_SETUP", "first frame must be setup"))
    assert server.state is ControlState.CLOSED
    client = ControlProtocol(Role.CLIENT)
    assert client.receive(text) == ErrorMessage("INVALID_SETUP", "first frame must be setup")
    assert client.state is ControlState.CLOSED


def test_server_cannot_offer_before_setup_done() -> None:
    proto = ControlProtocol(Role.SERVER)
    proto.receive(wire(Setup()))
    with pytest.raises(LocalProtocolError, match="CallIncoming"):
        proto.send(INCOMING)
    with pytest.raises(LocalProtocolError, match="CallEnded"):
        proto.send(CallEnded("call-1", "r"))


def test_server_accepts_then_offers() -> None:
    proto = ControlProtocol(Role.SERVER)
    proto.receive(wire(Setup()))
    assert json.loads(proto.send(SetupDone("conn-7"))) == {
        "type": "setup.done",
        "data": {"connectionId": "conn-7"},
    }
    assert proto.state is ControlState.READY
    assert proto.send(INCOMING) == wire(INCOMING)
    assert proto.send(CallEnded("call-1", "caller_hangup")) == wire(
        CallEnded("call-1", "caller_hangup")
    )
    assert proto.state is ControlState.READY


def test_server_refuses_setup_and_closes() -> None:
    proto = ControlProtocol(Role.SERVER)
    proto.receive(wire(Setup()))
    proto.send(ErrorMessage("UNSUPPORTED_SAMPLE_RATE", "no"))
    assert proto.state is ControlState.CLOSED


def test_server_rejects_a_second_setup() -> None:
    proto = ControlProtocol(Role.SERVER)
    proto.receive(wire(Setup()))
    with pytest.raises(RemoteProtocolError, match=r"client may not send Setup .* SETUP"):
        proto.receive(wire(Setup()))
    proto.send(SetupDone("c"))
    with pytest.raises(RemoteProtocolError, match="READY"):
        proto.receive(wire(Setup()))


def test_server_may_not_send_setup() -> None:
    proto = ControlProtocol(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="Setup"):
        proto.send(Setup())


def test_server_ignores_server_frames_from_a_client() -> None:
    proto = ControlProtocol(Role.SERVER)
    assert proto.receive(wire(SetupDone("c"))) == UnknownMessage("setup.done")
    assert proto.state is ControlState.IDLE


def test_control_client_and_server_agree_end_to_end() -> None:
    client, server = ControlProtocol(Role.CLIENT), ControlProtocol(Role.SERVER)
    assert server.receive(client.send(Setup(16000))) == Setup(16000)
    assert client.receive(server.send(SetupDone("conn-1"))) == SetupDone("conn-1")
    assert client.receive(server.send(INCOMING)) == INCOMING
    assert client.state is server.state is ControlState.READY


# --- media plane: client --------------------------------------------------------------------------


def respond(command_id: str, success: bool = True, **kw: Any) -> str:
    text = encode(CommandResponse(command_id, success, **kw))
    assert isinstance(text, str)
    return text


def grant(requested: int, frame: int = 960, channel: int = 0) -> str:
    text = encode(BufferRequest(requested, frame, channel))
    assert isinstance(text, str)
    return text


def test_client_starts_pending_without_credit() -> None:
    proto = MediaProtocol(Role.CLIENT)
    assert proto.call_state is CallState.PENDING
    assert proto.credit == 0
    assert proto.frame_bytes == 960
    assert proto.open_command_ids() == []
    assert not proto.terminated


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (16000, 640), (24000, 960)])
def test_default_frame_size_follows_the_sample_rate(rate: int, frame: int) -> None:
    assert MediaProtocol(Role.CLIENT, sample_rate=rate).frame_bytes == frame
    assert MediaProtocol(Role.SERVER, sample_rate=rate).frame_bytes == frame


def test_command_ids_are_unique() -> None:
    proto = MediaProtocol(Role.CLIENT)
    ids = [proto.command(Command.INTERRUPT, 10_000)[0] for _ in range(100)]
    assert len(set(ids)) == 100
    assert len(proto.open_command_ids()) == 100


def test_command_wire_text() -> None:
    proto = MediaProtocol(Role.CLIENT)
    cid, text = proto.command(Command.ANSWER, 10_000)
    assert json.loads(text) == {
        "type": "command",
        "data": {"command_id": cid, "command": "call.answer", "timeout_ms": 10_000},
    }
    cid2, text2 = proto.command(Command.CONNECT, 70_000, {"ringTimeSeconds": 60})
    assert json.loads(text2)["data"] == {
        "command_id": cid2,
        "command": "call.connect",
        "timeout_ms": 70_000,
        "data": {"ringTimeSeconds": 60},
    }


@pytest.mark.parametrize("timeout_ms", [0, -1, MAX_TIMEOUT_MS + 1])
def test_command_timeout_must_be_in_range(timeout_ms: int) -> None:
    proto = MediaProtocol(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="timeout_ms"):
        proto.command(Command.ANSWER, timeout_ms)
    assert proto.open_command_ids() == []


def test_command_timeout_upper_bound_is_accepted() -> None:
    MediaProtocol(Role.CLIENT).command(Command.CONNECT, MAX_TIMEOUT_MS)


def test_response_is_correlated_by_id() -> None:
    proto = MediaProtocol(Role.CLIENT)
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
        ([Command.CONNECT, Command.CLOSE], CallState.DISCONNECTED),
        ([Command.ANSWER, Command.CONNECT, Command.DISCONNECT], CallState.DISCONNECTED),
    ],
    ids=lambda v: "-".join(c.name for c in v) if isinstance(v, list) else v.value,
)
def test_successful_commands_update_state(path: list[Command], final: CallState) -> None:
    proto = MediaProtocol(Role.CLIENT)
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
    proto = MediaProtocol(Role.CLIENT)
    for step in setup:
        proto.receive(respond(proto.command(step, 10_000)[0]))
    before = proto.call_state
    cid, _ = proto.command(command, 10_000)
    event = proto.receive(respond(cid, False, error_code=code, error_message="no"))
    assert isinstance(event, CommandCompleted)
    assert event.response.error_code == code
    assert event.state is before
    assert proto.call_state is before


def test_success_outside_the_table_keeps_state() -> None:
    # The server is the authority; a success our table cannot place keeps our state.
    proto = MediaProtocol(Role.CLIENT)
    cid, _ = proto.command(Command.WHISPER, 10_000)
    event = proto.receive(respond(cid))
    assert isinstance(event, CommandCompleted)
    assert proto.call_state is CallState.PENDING


def test_disconnected_stays_disconnected_on_late_successes() -> None:
    proto = MediaProtocol(Role.CLIENT)
    answer, _ = proto.command(Command.ANSWER, 10_000)
    disconnect, _ = proto.command(Command.DISCONNECT, 10_000)
    proto.receive(respond(disconnect))
    assert proto.call_state is CallState.DISCONNECTED
    proto.receive(respond(answer))
    assert proto.call_state is CallState.DISCONNECTED


def test_unknown_command_id_is_ignored() -> None:
    proto = MediaProtocol(Role.CLIENT)
    proto.command(Command.ANSWER, 10_000)
    event = proto.receive(respond("nope"))
    assert isinstance(event, MessageIgnored)
    assert "'nope'" in event.reason
    assert len(proto.open_command_ids()) == 1
    assert proto.call_state is CallState.PENDING


def test_late_response_after_forget_is_ignored() -> None:
    proto = MediaProtocol(Role.CLIENT)
    cid, _ = proto.command(Command.ANSWER, 10_000)
    proto.forget_command(cid)
    assert proto.open_command_ids() == []
    assert isinstance(proto.receive(respond(cid)), MessageIgnored)
    assert proto.call_state is CallState.PENDING
    proto.forget_command(cid)  # idempotent
    proto.forget_command("never-sent")


def test_second_response_to_one_command_is_ignored() -> None:
    proto = MediaProtocol(Role.CLIENT)
    cid, _ = proto.command(Command.ANSWER, 10_000)
    assert isinstance(proto.receive(respond(cid)), CommandCompleted)
    assert isinstance(proto.receive(respond(cid, False, error_code="X")), MessageIgnored)
    assert proto.call_state is CallState.ANSWERED


def test_buffer_request_grants_credit() -> None:
    proto = MediaProtocol(Role.CLIENT)
    assert proto.receive(grant(4800, 640)) == BufferRequest(4800, 640, 0)
    assert proto.credit == 4800
    assert proto.frame_bytes == 640
    proto.receive(grant(960, 960))
    assert proto.credit == 5760
    assert proto.frame_bytes == 960


@pytest.mark.parametrize("channel", [1, 2, 7, -1])
def test_credit_for_another_channel_is_ignored(channel: int) -> None:
    proto = MediaProtocol(Role.CLIENT)
    event = proto.receive(grant(4800, 640, channel))
    assert isinstance(event, MessageIgnored)
    assert str(channel) in event.reason
    assert proto.credit == 0
    assert proto.frame_bytes == 960


def test_take_audio_without_credit_takes_nothing() -> None:
    proto = MediaProtocol(Role.CLIENT)
    buffer = bytearray(b"\x01\x00" * 100)
    assert proto.take_audio(buffer) == []
    assert len(buffer) == 200


def test_take_audio_never_exceeds_credit() -> None:
    proto = MediaProtocol(Role.CLIENT)
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
    proto = MediaProtocol(Role.CLIENT)
    proto.receive(grant(48_000, 960))
    buffer = bytearray(b"\x05\x00" * 1000)  # 2000 bytes
    frames = proto.take_audio(buffer)
    assert [len(f) - 1 for f in frames] == [960, 960, 80]
    assert all(isinstance(f, bytes) for f in frames)
    assert buffer == bytearray()
    assert proto.credit == 46_000


def test_take_audio_whole_frames_exactly() -> None:
    proto = MediaProtocol(Role.CLIENT)
    proto.receive(grant(1920, 960))
    frames = proto.take_audio(bytearray(1920))
    assert frames == [b"\x00" + bytes(960)] * 2


def test_take_audio_sends_only_whole_samples() -> None:
    proto = MediaProtocol(Role.CLIENT)
    proto.receive(grant(100, 960))
    buffer = bytearray(b"\x01\x02\x03\x04\x05")  # two samples and half of one
    assert proto.take_audio(buffer) == [b"\x00\x01\x02\x03\x04"]
    assert buffer == bytearray(b"\x05")
    assert proto.credit == 96
    assert proto.take_audio(buffer) == []
    assert buffer == bytearray(b"\x05")


def test_odd_credit_is_used_in_whole_samples() -> None:
    proto = MediaProtocol(Role.CLIENT)
    proto.receive(grant(7, 960))
    buffer = bytearray(20)
    assert proto.take_audio(buffer) == [b"\x00" + bytes(6)]
    assert proto.credit == 1
    assert proto.take_audio(buffer) == []
    proto.receive(grant(1, 960))
    assert proto.take_audio(buffer) == [b"\x00" + bytes(2)]
    assert proto.credit == 0
    assert len(buffer) == 12


def test_call_terminated_ends_the_call() -> None:
    proto = MediaProtocol(Role.CLIENT)
    answer, _ = proto.command(Command.ANSWER, 10_000)
    event = proto.receive(wire(CallTerminatedEvent("caller_hangup")))
    assert event == CallTerminatedEvent("caller_hangup")
    assert proto.terminated
    assert proto.call_state is CallState.DISCONNECTED
    assert proto.open_command_ids() == []
    assert isinstance(proto.receive(respond(answer)), MessageIgnored)
    assert proto.call_state is CallState.DISCONNECTED
    with pytest.raises(LocalProtocolError, match="terminated"):
        proto.command(Command.ANSWER, 10_000)


def test_call_error_does_not_change_state() -> None:
    proto = MediaProtocol(Role.CLIENT)
    assert proto.receive(wire(CallErrorEvent("X", "y"))) == CallErrorEvent("X", "y")
    assert proto.receive('{"type":"call_event","data":{"event":"call.hold"}}') == (
        UnknownCallEvent("call.hold")
    )
    assert proto.receive('{"type":"stats","data":{}}') == UnknownMessage("stats")
    assert proto.call_state is CallState.PENDING
    assert not proto.terminated


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_client_receives_audio(channel: int) -> None:
    proto = MediaProtocol(Role.CLIENT)
    assert proto.receive(bytes([channel]) + b"\x01\x00" * 480) == AudioFrame(
        channel, b"\x01\x00" * 480
    )


@pytest.mark.parametrize("raw", [b"\x00", b"\x00\x01\x02\x03", b"\x09\x00\x00"])
def test_client_refuses_malformed_audio(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        MediaProtocol(Role.CLIENT).receive(raw)


def test_client_ignores_a_command_from_the_server() -> None:
    proto = MediaProtocol(Role.CLIENT)
    assert proto.receive(wire(CommandRequest("x", "call.answer", 1))) == UnknownMessage("command")


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.grant(960),
        lambda p: p.respond("c1", True),
        lambda p: p.terminate("agent_close"),
    ],
    ids=["grant", "respond", "terminate"],
)
def test_client_may_not_use_server_operations(call: Any) -> None:
    with pytest.raises(LocalProtocolError, match="only the server"):
        call(MediaProtocol(Role.CLIENT))


# --- media plane: server --------------------------------------------------------------------------


def command_text(command_id: str, command: str = "call.answer") -> str:
    text = encode(CommandRequest(command_id, command, 10_000))
    assert isinstance(text, str)
    return text


def test_server_may_not_send_commands() -> None:
    with pytest.raises(LocalProtocolError, match="only the client"):
        MediaProtocol(Role.SERVER).command(Command.ANSWER, 10_000)


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (24000, 960)])
def test_server_grant(rate: int, frame: int) -> None:
    proto = MediaProtocol(Role.SERVER, sample_rate=rate)
    text = proto.grant(4800)
    assert json.loads(text) == {
        "type": "buffer_request",
        "data": {"requested_bytes": 4800, "prefer_audio_frame_bytes": frame, "channelId": 0},
    }
    assert proto.credit == 4800
    proto.grant(200)
    assert proto.credit == 5000


def test_server_receives_and_responds() -> None:
    proto = MediaProtocol(Role.SERVER)
    assert proto.receive(command_text("c1")) == CommandRequest("c1", "call.answer", 10_000)
    assert len(proto.open_command_ids()) == 1
    text = proto.respond("c1", True, {"state": "ANSWERED"})
    assert json.loads(text) == {
        "type": "command_response",
        "data": {
            "command_id": "c1",
            "success": True,
            "result": {"state": "ANSWERED"},
            "error_code": None,
            "error_message": None,
        },
    }
    assert proto.open_command_ids() == []


def test_server_failure_response() -> None:
    proto = MediaProtocol(Role.SERVER)
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
    proto = MediaProtocol(Role.SERVER)
    proto.receive(command_text("c1"))
    proto.respond("c1", True)
    with pytest.raises(LocalProtocolError, match="'c1' is not open"):
        proto.respond("c1", True)
    with pytest.raises(LocalProtocolError, match="'never' is not open"):
        proto.respond("never", False, error_code="X")


def test_reused_open_command_id_is_a_remote_error() -> None:
    proto = MediaProtocol(Role.SERVER)
    proto.receive(command_text("c1"))
    with pytest.raises(RemoteProtocolError, match="'c1' reused while open"):
        proto.receive(command_text("c1", "call.connect"))
    assert len(proto.open_command_ids()) == 1
    proto.respond("c1", True)
    # Once answered, an id may come again (ids need only be unique among open commands here).
    assert proto.receive(command_text("c1")).command_id == "c1"


def test_server_accepts_unknown_command_names_for_a_response() -> None:
    proto = MediaProtocol(Role.SERVER)
    assert proto.receive(command_text("c1", "call.teleport")).command == "call.teleport"
    proto.respond("c1", False, error_code="INVALID_COMMAND")


def test_server_terminate() -> None:
    proto = MediaProtocol(Role.SERVER)
    text = proto.terminate("agent_disconnect")
    assert json.loads(text) == {
        "type": "call_event",
        "data": {"event": "call.terminated", "reason": "agent_disconnect"},
    }
    assert proto.terminated
    assert proto.call_state is CallState.DISCONNECTED


def test_agent_audio_within_credit() -> None:
    proto = MediaProtocol(Role.SERVER)
    proto.grant(1920)
    event = proto.receive(b"\x00" + b"\x01\x00" * 480)
    assert event == AgentAudioReceived(b"\x01\x00" * 480, 0)
    assert proto.credit == 960


def test_agent_audio_beyond_credit_is_cut_and_counted() -> None:
    proto = MediaProtocol(Role.SERVER)
    proto.grant(400)
    pcm = bytes(range(200)) * 3  # 600 bytes
    event = proto.receive(b"\x00" + pcm)
    assert event == AgentAudioReceived(pcm[:400], 200)
    assert proto.credit == 0
    event = proto.receive(b"\x00" + pcm[:2])
    assert event == AgentAudioReceived(b"", 2)
    assert proto.credit == 0


@pytest.mark.parametrize("channel", [1, 2])
def test_agent_audio_on_another_channel_is_a_remote_error(channel: int) -> None:
    proto = MediaProtocol(Role.SERVER)
    proto.grant(960)
    with pytest.raises(RemoteProtocolError, match=f"channel {channel}"):
        proto.receive(bytes([channel]) + bytes(960))
    assert proto.credit == 960


def test_server_refuses_malformed_audio() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown channel"):
        MediaProtocol(Role.SERVER).receive(b"\x05\x00\x00")


def test_server_ignores_client_frames_from_the_server_side() -> None:
    proto = MediaProtocol(Role.SERVER)
    assert proto.receive(grant(960)) == UnknownMessage("buffer_request")
    assert proto.credit == 0


def test_media_client_and_server_agree_end_to_end() -> None:
    client, server = MediaProtocol(Role.CLIENT), MediaProtocol(Role.SERVER)
    cid, text = client.command(Command.ANSWER, 10_000)
    request = server.receive(text)
    assert isinstance(request, CommandRequest)
    completed = client.receive(server.respond(request.command_id, True))
    assert isinstance(completed, CommandCompleted)
    assert completed.response.command_id == cid
    assert client.call_state is CallState.ANSWERED

    assert client.receive(server.grant(4800)) == BufferRequest(4800, 960, 0)
    buffer = bytearray(b"\x02\x00" * 4000)  # 8000 bytes queued, 4800 allowed
    for frame in client.take_audio(buffer):
        event = server.receive(frame)
        assert isinstance(event, AgentAudioReceived)
        assert event.excess_bytes == 0
    assert client.credit == server.credit == 0
    assert len(buffer) == 3200

    assert client.receive(server.terminate("agent_close")) == CallTerminatedEvent("agent_close")
    assert client.terminated
    assert server.terminated
