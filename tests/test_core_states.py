"""The call state table of PROTOCOL.md, shared by the client and the sandbox."""

from __future__ import annotations

import itertools

import pytest

from telcoflow._core import (
    FRAME_MS,
    SAMPLE_RATES,
    AgentMode,
    AudioMode,
    CallState,
    Command,
    LocalProtocolError,
    allowed_commands,
    frame_bytes_for,
    state_after,
)

P, A, C, D = CallState.PENDING, CallState.ANSWERED, CallState.CONNECTED, CallState.DISCONNECTED

#: PROTOCOL.md, "Call states and what commands do": (state, command) -> state after success.
TABLE = {
    (P, Command.ANSWER): A,
    (P, Command.CONNECT): C,
    (P, Command.DISCONNECT): D,
    (P, Command.INTERRUPT): P,
    (A, Command.CONNECT): C,
    (A, Command.CLOSE): D,
    (A, Command.DISCONNECT): D,
    (A, Command.INTERRUPT): A,
    (C, Command.WHISPER): C,
    (C, Command.BARGE): C,
    (C, Command.SPY): C,
    (C, Command.INTERRUPT): C,
    (C, Command.CLOSE): D,
    (C, Command.DISCONNECT): D,
}

ALL_PAIRS = list(itertools.product(CallState, Command))
DISALLOWED = [pair for pair in ALL_PAIRS if pair not in TABLE]


def test_command_wire_names() -> None:
    assert {c.value for c in Command} == {
        "call.answer",
        "call.connect",
        "agent.whisper",
        "agent.barge",
        "agent.spy",
        "agent.interrupt",
        "call.close",
        "call.disconnect",
    }
    assert str(Command.CONNECT) == "call.connect"


def test_enum_values() -> None:
    assert [s.value for s in CallState] == ["PENDING", "ANSWERED", "CONNECTED", "DISCONNECTED"]
    assert str(CallState.ANSWERED) == "ANSWERED"
    assert {m.value for m in AgentMode} == {"barge", "whisper", "spy"}
    assert {m.value for m in AudioMode} == {"mixed", "isolated"}
    assert str(AudioMode.ISOLATED) == "isolated"
    # str enums compare equal to their wire text.
    assert CallState.CONNECTED == "CONNECTED"
    assert Command.ANSWER == "call.answer"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (P, {Command.ANSWER, Command.CONNECT, Command.DISCONNECT, Command.INTERRUPT}),
        (A, {Command.CONNECT, Command.CLOSE, Command.DISCONNECT, Command.INTERRUPT}),
        (
            C,
            {
                Command.WHISPER,
                Command.BARGE,
                Command.SPY,
                Command.INTERRUPT,
                Command.CLOSE,
                Command.DISCONNECT,
            },
        ),
        (D, set()),
    ],
)
def test_allowed_commands(state: CallState, expected: set[Command]) -> None:
    allowed = allowed_commands(state)
    assert isinstance(allowed, frozenset)
    assert allowed == expected


def test_interrupt_is_allowed_in_every_live_state() -> None:
    for state in (P, A, C):
        assert Command.INTERRUPT in allowed_commands(state)
        assert state_after(state, Command.INTERRUPT) is state


@pytest.mark.parametrize(("pair", "after"), list(TABLE.items()), ids=str)
def test_state_after_allowed_pairs(pair: tuple[CallState, Command], after: CallState) -> None:
    state, command = pair
    assert command in allowed_commands(state)
    assert state_after(state, command) is after


@pytest.mark.parametrize(("state", "command"), DISALLOWED, ids=str)
def test_disallowed_pairs_raise_naming_state_and_command(
    state: CallState, command: Command
) -> None:
    assert command not in allowed_commands(state)
    with pytest.raises(LocalProtocolError) as info:
        state_after(state, command)
    assert state.value in str(info.value)
    assert command.value in str(info.value)


def test_table_covers_every_pair() -> None:
    # Each pair is either in the table (allowed) or refused: the two tests above cover all 32.
    assert len(TABLE) + len(DISALLOWED) == len(CallState) * len(Command)
    for state in CallState:
        assert allowed_commands(state) == {cmd for (s, cmd) in TABLE if s is state}


def test_disconnected_is_terminal() -> None:
    for command in Command:
        with pytest.raises(LocalProtocolError, match="DISCONNECTED"):
            state_after(D, command)


def test_no_transition_goes_back_to_pending() -> None:
    for (state, _command), after in TABLE.items():
        if state is not P:
            assert after is not P


@pytest.mark.parametrize(("rate", "frame_bytes"), [(24000, 960), (16000, 640), (8000, 320)])
def test_frame_bytes_for(rate: int, frame_bytes: int) -> None:
    assert frame_bytes_for(rate) == frame_bytes
    # 20 ms of PCM16 mono: rate * 2 bytes per second / 50 frames per second.
    assert frame_bytes == rate * 2 * FRAME_MS // 1000


def test_sample_rates() -> None:
    assert frozenset({8000, 16000, 24000}) == SAMPLE_RATES
    assert FRAME_MS == 20
