"""A call's commands: each sent once over the media connection and answered once, by id.

Invariants:

- a command has a waiter in ``waiters`` from the moment it is sent until its caller returns, and
  the waiter gets one outcome: the server's response (``call.command_response`` with the same
  ``commandId``), or ``WSSCallClosedError`` from :meth:`CallCommands.end` once the call is over;
  with neither within its timeout the caller raises ``WSSCallCommandTimeoutError`` (a late
  response is then ignored: the protocol object forgets the id);
- once :meth:`CallCommands.end` has run no command is sent: each raises ``WSSCallClosedError``;
- ``agent_mode`` follows the commands the server accepted (barge, whisper, spy; PROTOCOL.md),
  and ``answer``/``connect`` report their outcome as events (``CALL_ANSWERED`` or
  ``CALL_ANSWER_FAILED``, ...), a timeout included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from .. import events
from .._core import AgentMode, Command, CommandCompleted, ErrorCode, MediaProtocol, agent_mode_after
from .._net import ConnectionClosed, WebSocketConnection
from ..exceptions import (
    WSSCallClosedError,
    WSSCallCommandError,
    WSSCallCommandTimeoutError,
    WSSCallError,
)
from ._records import CallStats

__all__ = ["CallCommands"]

logger = logging.getLogger("telcoflow_sdk.media_connection")

_FAILED_EVENT = {
    Command.ANSWER: events.CALL_ANSWER_FAILED,
    Command.CONNECT: events.CALL_CONNECT_FAILED,
}
_DONE_EVENT = {Command.ANSWER: events.CALL_ANSWERED, Command.CONNECT: events.CALL_CONNECTED}


class _Waiter:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: CommandCompleted | WSSCallError | None = None


class CallCommands:
    """The commands of one call and the responses they wait for."""

    __slots__ = (
        "_call_id",
        "_conn",
        "_emit",
        "_proto",
        "_stats",
        "_timeout",
        "agent_mode",
        "ended",
        "waiters",
    )

    def __init__(
        self,
        call_id: str,
        proto: MediaProtocol,
        conn: WebSocketConnection,
        stats: CallStats,
        *,
        timeout: float,
        emit: Callable[[str, Any], None],
    ) -> None:
        self._call_id = call_id
        self._proto = proto
        self._conn = conn
        self._stats = stats
        #: The default timeout of a command (``command_timeout``), in seconds.
        self._timeout = timeout
        #: Where the outcome of ``answer`` and ``connect`` goes (the call's events).
        self._emit = emit
        self.waiters: dict[str, _Waiter] = {}
        #: Who hears the agent, as the commands the server accepted imply it.
        self.agent_mode: AgentMode | None = None
        #: Why the call ended (no command is sent any more), or None.
        self.ended: str | None = None

    async def run(
        self,
        command: Command,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        timeout_ms: int | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Any:
        """Send ``command`` and wait for its response; its ``result``. ``on_sent`` is called
        once the command's frame has left (or could not): ``clear_send_audio_buffer`` holds the
        audio back until then."""
        if self.ended is not None:
            if on_sent is not None:
                on_sent()
            raise WSSCallClosedError(
                f"cannot {command.value}: call {self._call_id} has ended ({self.ended})",
                self._call_id,
            )
        timeout = self._timeout if timeout is None else timeout
        if timeout_ms is None:
            timeout_ms = max(1, int(timeout * 1000))
        command_id, wire = self._proto.command(command, timeout_ms, data)
        # No checkpoint between the check of `ended` above and this line: `end` fails the
        # waiters there are, so one registered after the call ended would wait out its timeout.
        waiter = self.waiters[command_id] = _Waiter()
        logger.debug("call %s: -> %s (%s)", self._call_id, command.value, command_id)
        started = anyio.current_time()
        try:
            # The send is inside the timeout too: a server that stops reading must not hold a
            # command past its timeout (the frame stays queued; a late answer is ignored).
            with anyio.move_on_after(timeout):
                try:
                    await self._conn.send(wire)
                except ConnectionClosed:
                    raise self._closed_error(command) from None
                finally:
                    if on_sent is not None:
                        on_sent()
                await waiter.done.wait()
        finally:
            del self.waiters[command_id]
        outcome = waiter.outcome
        if outcome is None:
            self._proto.forget_command(command_id)
            error: WSSCallError = WSSCallCommandTimeoutError(
                f"{command.value} on call {self._call_id}: no response within {timeout:g} s",
                self._call_id,
                command=command.value,
                timeout=timeout,
            )
            if command in _FAILED_EVENT:
                self._emit(_FAILED_EVENT[command], error)
            raise error
        latency = (anyio.current_time() - started) * 1000
        self._stats.command_latencies_ms.setdefault(command.value, []).append(latency)
        if isinstance(outcome, WSSCallError):
            raise outcome
        return outcome.response.result

    def completed(self, completed: CommandCompleted) -> None:
        """The server answered a command: wake its caller, follow the agent mode, report."""
        command, response = completed.command, completed.response
        waiter = self.waiters.get(response.command_id)
        outcome: CommandCompleted | WSSCallError = completed
        if response.success:
            self.agent_mode = agent_mode_after(command, self.agent_mode)
            if command in _DONE_EVENT:
                self._emit(_DONE_EVENT[command], None)
        else:
            outcome = self._command_error(command, response.error_code, response.error_message)
            if command in _FAILED_EVENT:
                self._emit(_FAILED_EVENT[command], outcome)
        logger.debug(
            "call %s: <- %s %s %s",
            self._call_id,
            command.value,
            "ok" if response.success else "failed",
            response.error_code or "",
        )
        if waiter is not None:
            waiter.outcome = outcome
            waiter.done.set()

    def end(self, reason: str) -> None:
        """The call is over: every command waiting fails now with ``WSSCallClosedError``, and
        none is sent from now on."""
        self.ended = reason
        for waiter in self.waiters.values():
            if waiter.outcome is None:
                waiter.outcome = WSSCallClosedError(
                    f"call {self._call_id} ended ({reason}) before the command was answered",
                    self._call_id,
                )
                waiter.done.set()

    def _closed_error(self, command: Command) -> WSSCallClosedError:
        reason = self.ended or "media connection closed"
        return WSSCallClosedError(
            f"{command.value} on call {self._call_id}: the call ended ({reason})", self._call_id
        )

    def _command_error(
        self, command: Command, code: str | None, message: str | None
    ) -> WSSCallError:
        text = f"{command.value} on call {self._call_id} failed: {code}" + (
            f" ({message})" if message else ""
        )
        if code == ErrorCode.CALL_TERMINATED:
            return WSSCallClosedError(text, self._call_id)
        if code == ErrorCode.TIMEOUT:
            return WSSCallCommandTimeoutError(text, self._call_id, command=command.value)
        return WSSCallCommandError(
            text, self._call_id, command=command.value, error_code=code, error_message=message
        )
