"""The call state table of PROTOCOL.md ("Call states and what commands do"), which both roles
read: the call's view (the sandbox's: close in CONNECTED keeps the call) and the agent's view
(the client's: once it has left, the call is over for it)."""

from __future__ import annotations

import itertools

import pytest

from telcoflow._core import (
    AgentMode,
    AudioMode,
    CallState,
    Command,
    LocalProtocolError,
    ProtocolError,
    agent_leaves,
    agent_mode_after,
    allowed_commands,
    call_state_after,
    state_after,
)

P, A, C, D = CallState.PENDING, CallState.ANSWERED, CallState.CONNECTED, CallState.DISCONNECTED

#: PROTOCOL.md: (state, command) -> the call's state after success, as the server keeps it.
CALL_VIEW = {
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
    # "close: the agent leaves, caller and callee stay connected".
    (C, Command.CLOSE): C,
    (C, Command.DISCONNECT): D,
}

#: The same, as the agent sees it: close and disconnect take it out of the call.
AGENT_VIEW = {
    pair: D if pair[1] in (Command.CLOSE, Command.DISCONNECT) else after
    for pair, after in CALL_VIEW.items()
}

ALL_PAIRS = list(itertools.product(CallState, Command))
REFUSED = [pair for pair in ALL_PAIRS if pair not in CALL_VIEW]

#: The agent's mode after each command: connect puts it in barge mode; the three mode commands
#: set theirs; every other command keeps the mode it had.
MODE_SET = {
    Command.CONNECT: AgentMode.BARGE,
    Command.WHISPER: AgentMode.WHISPER,
    Command.BARGE: AgentMode.BARGE,
    Command.SPY: AgentMode.SPY,
}


def _ids(value: object) -> str:
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(str(v) for v in value)) or "none"
    return str(value)


def test_command_wire_names() -> None:
    assert [c.value for c in Command] == [
        "call.answer",
        "call.connect",
        "agent.whisper",
        "agent.barge",
        "agent.spy",
        "agent.interrupt",
        "call.close",
        "call.disconnect",
    ]
    assert str(Command.CONNECT) == "call.connect"
    wire: str = "call.answer"
    assert wire == Command.ANSWER  # a str enum equals its wire text


def test_enum_values() -> None:
    assert [s.value for s in CallState] == ["PENDING", "ANSWERED", "CONNECTED", "DISCONNECTED"]
    assert str(CallState.ANSWERED) == "ANSWERED"
    assert CallState.CONNECTED == "CONNECTED"
    assert [m.value for m in AgentMode] == ["barge", "whisper", "spy"]
    assert [m.value for m in AudioMode] == ["mixed", "isolated"]
    assert str(AudioMode.ISOLATED) == "isolated"


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
    ids=_ids,
)
def test_allowed_commands(state: CallState, expected: set[Command]) -> None:
    allowed = allowed_commands(state)
    assert isinstance(allowed, frozenset)
    assert allowed == expected


@pytest.mark.parametrize(("state", "command"), ALL_PAIRS, ids=_ids)
def test_every_pair_is_allowed_or_refused_in_both_views(state: CallState, command: Command) -> None:
    if (state, command) in CALL_VIEW:
        assert command in allowed_commands(state)
        assert call_state_after(state, command) is CALL_VIEW[state, command]
        assert state_after(state, command) is AGENT_VIEW[state, command]
        return
    assert command not in allowed_commands(state)
    for view in (call_state_after, state_after):
        with pytest.raises(LocalProtocolError) as info:
            view(state, command)
        # The message names what was refused, and where.
        assert state.value in str(info.value)
        assert command.value in str(info.value)


def test_table_covers_every_pair() -> None:
    assert len(CALL_VIEW) + len(REFUSED) == len(CallState) * len(Command) == 32
    for state in CallState:
        assert allowed_commands(state) == {cmd for (s, cmd) in CALL_VIEW if s is state}


def test_the_views_differ_only_where_the_agent_leaves_a_live_call() -> None:
    differ = {pair for pair in CALL_VIEW if call_state_after(*pair) is not state_after(*pair)}
    assert differ == {(C, Command.CLOSE)}
    assert call_state_after(C, Command.CLOSE) is C
    assert state_after(C, Command.CLOSE) is D


@pytest.mark.parametrize("command", list(Command), ids=str)
def test_agent_leaves_on_close_and_disconnect_only(command: Command) -> None:
    assert agent_leaves(command) is (command in (Command.CLOSE, Command.DISCONNECT))


@pytest.mark.parametrize(("state", "command"), list(CALL_VIEW), ids=_ids)
def test_agent_view_is_the_call_view_unless_the_agent_leaves(
    state: CallState, command: Command
) -> None:
    expected = D if agent_leaves(command) else call_state_after(state, command)
    assert state_after(state, command) is expected


@pytest.mark.parametrize("mode", [None, *AgentMode], ids=str)
@pytest.mark.parametrize("command", list(Command), ids=str)
def test_agent_mode_after(command: Command, mode: AgentMode | None) -> None:
    assert agent_mode_after(command, mode) is MODE_SET.get(command, mode)


def test_interrupt_is_allowed_in_every_live_state_and_changes_nothing() -> None:
    for state in (P, A, C):
        assert Command.INTERRUPT in allowed_commands(state)
        assert call_state_after(state, Command.INTERRUPT) is state
        assert state_after(state, Command.INTERRUPT) is state
    assert agent_mode_after(Command.INTERRUPT, AgentMode.SPY) is AgentMode.SPY


def test_disconnected_is_terminal_in_both_views() -> None:
    for command in Command:
        for view in (call_state_after, state_after):
            with pytest.raises(LocalProtocolError, match="DISCONNECTED"):
                view(D, command)


def test_no_transition_goes_back_to_pending() -> None:
    for (state, _command), after in CALL_VIEW.items():
        if state is not P:
            assert after is not P


def test_refusals_are_local_protocol_errors() -> None:
    # Our own table refusing our own command: a LocalProtocolError, part of the one hierarchy.
    with pytest.raises(ProtocolError):
        call_state_after(P, Command.CLOSE)
    assert issubclass(LocalProtocolError, ProtocolError)
