"""``TelcoflowClient``: the control connection (the session manager), its reconnection, and the
calls it takes.

PROTOCOL.md, "An inbound call": the server notifies every control connection of a connector of a
ringing call (``session.notify``); the first to claim it (``session.open``) takes it, readies it
(``session.ready``), is told where its media is (``call.in``) and opens that media connection;
only then does the application get the :class:`~telcoflow.call.ActiveCall`. Several processes may
share a connector: each claims what it has room for, and ``SESSION_BUSY`` means another took it.

The client owns one task group. In it, a supervisor keeps the control connection alive (reading
frames through a link, heartbeating, reconnecting with jittered backoff) and every session the
client claims runs in a task of its own: the claim, then the call's own task group (see
:mod:`telcoflow.call`). Losing the control connection ends no call: media connections are
independent. Leaving ``async with`` closes every active call (the agent leaves), stops every task
and closes every connection: nothing outlives the block.

The parts that stand on their own are in :mod:`telcoflow._client`: how the client reaches the
service (``Connector``: TLS, credentials, handshakes, the REST plane, and their errors), the
control connection's request correlation (``Control``), the hand-off of calls to the
application in the order they were notified (``Handoff``, ``IncomingCalls``) and the public
records. A call is run only through its contract with the client (``ActiveCall._serve``,
``_wait_delivered``, ``_cancel``).

Invariants:

- a session id is in ``_sessions`` from the moment the client decides to claim it until its task
  ends; a notification of a session already there (``RESUME`` after a reconnect, or a repeated
  notify) is ignored;
- a call is in ``_calls`` from the moment its media connection is open until it ends for the
  agent; ``max_calls`` counts ``_sessions``, so claims in flight count against it too;
- a process claims a notified call after a delay that grows with the calls it holds
  (``CLAIM_DELAY_PER_CALL_S``), so the least loaded process of a connector claims first;
- every request has a bounded wait (``request_timeout``), and fails at once when the control
  connection is lost.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, overload
from urllib.parse import urlsplit

import anyio
import anyio.abc
import attrs

from . import events
from ._client import (
    ClientStats,
    Connector,
    Control,
    Handoff,
    IncomingCalls,
    SessionRecord,
    unwrap,
)
from ._context import CALL_ID, SESSION_ID
from ._core import (
    Activity,
    CallFlowSetup,
    CallIn,
    CallState,
    Channel,
    Direction,
    ErrorCode,
    ErrorMessage,
    InboundCallFlow,
    MessageIgnored,
    RequestCompleted,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    UnknownMessage,
)
from ._handlers import H, HandlerRegistry
from ._net import (
    Backoff,
    ConnectFailed,
    open_link,
)
from .call import ActiveCall, CallDetails, check_ring_time
from .config import TelcoflowClientConfig
from .exceptions import (
    WSSAuthenticationError,
    WSSCallCommandError,
    WSSConnectionError,
    WSSError,
    WSSMediaError,
    WSSRequestError,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ClientStats", "IncomingCalls", "SessionRecord", "TelcoflowClient"]

# Public classes defined in private modules name the module users import them from (in reprs,
# tracebacks, pickles and generated docs).
for _public in (ClientStats, IncomingCalls, SessionRecord):
    _public.__module__ = __name__

logger = logging.getLogger("telcoflow_sdk.control_connection")

#: On exit, how long each call gets to leave politely (``call.close``) before it is torn down.
LEAVE_TIMEOUT = 3.0

#: Media connections being opened at once at most, in all and to one host; further calls wait
#: for a slot. A server offering calls at an address that never answers cannot pile up tasks
#: and sockets, nor hold up the calls whose media is on a host that answers.
MAX_OPENING_CALLS = 256
MAX_OPENING_PER_HOST = 32

#: Sessions claimed and not yet connected at most; past it new notifications are left to the
#: connector's other processes (a server notifying thousands of calls at once cannot make
#: this process hold them all).
MAX_CLAIMS_IN_FLIGHT = 1000

#: Load-based claiming: a process holding calls waits this long per call in hand (up to the
#: cap) before it claims a new one, so that a process with fewer calls, notified at the same
#: moment, claims first and the connector's calls spread over its processes. Alone on a
#: connector, a process loses at most the cap per call; that is far below a ring.
CLAIM_DELAY_PER_CALL_S = 0.002
CLAIM_DELAY_MAX_S = 0.05

#: Calls left to others for want of room that are remembered, to claim if room frees up.
MAX_DEFERRED = 1000

#: Failures of one kind logged at WARNING, then one in every ``QUIET_EVERY`` (a flood of bad
#: calls must not flood the log).
LOUD_FAILURES = 10
QUIET_EVERY = 100

#: A control connection that lived at least this long was a success: the backoff starts again
#: from its first delay. One that died sooner (a server that accepts, then drops at once) is
#: counted as a failed attempt, so that ``max_attempts`` stops a reconnect loop.
STABLE_CONNECTION_S = 10.0

#: Handler failures kept in :attr:`TelcoflowClient.handler_errors`.
MAX_HANDLER_ERRORS_KEPT = 100

#: A dialled call rings this much longer, at most, than the ring time asked for before the
#: client gives up on it (the server's own ring timeout comes first).
DIAL_GRACE_S = 5.0


class _Session:
    """A session this client claimed (or is claiming), from the claim until its call ends."""

    __slots__ = (
        "call",
        "call_in",
        "closed",
        "created_at",
        "direction",
        "id",
        "released",
        "scope",
        "signal",
    )

    def __init__(self, session_id: str, direction: Direction, created_at: float) -> None:
        self.id = session_id
        self.direction = direction
        self.created_at = created_at
        self.scope = anyio.CancelScope()
        #: Set when ``call.in`` or ``session.closed`` arrives (whichever comes first).
        self.signal = anyio.Event()
        self.call_in: CallIn | None = None
        self.closed: SessionClosed | None = None
        self.call: ActiveCall | None = None
        #: Its call ended for us: the session no longer holds a place (``max_calls``), and a new
        #: notification of it is a new call.
        self.released = False


class _SessionEnded(Exception):
    """A claimed session ended before its call could be taken (``session.closed``)."""

    def __init__(self, closed: SessionClosed) -> None:
        super().__init__(closed.reason)
        self.closed = closed


class TelcoflowClient:
    """Takes the calls of one connector. Use as ``async with TelcoflowClient(config) as client``."""

    def __init__(self, config: TelcoflowClientConfig) -> None:
        if not isinstance(config, TelcoflowClientConfig):
            raise TypeError(f"config must be a TelcoflowClientConfig, not {type(config).__name__}")
        self.config = config
        self._handlers = HandlerRegistry((e.value for e in events.ClientEvent), "client")
        #: Calls whose media connection is open and which have not ended, by call id.
        self._calls: dict[str, ActiveCall] = {}
        #: Sessions claimed (or being claimed) and not yet over, by session id.
        self._sessions: dict[str, _Session] = {}
        #: Calls whose tasks still run (an ended call's handler may still be finishing up).
        self._serving: set[ActiveCall] = set()
        #: Hands calls to the application in the order notified (and to ``incoming_calls()``).
        self._handoff = Handoff()
        self._opening: anyio.CapacityLimiter | None = None
        self._opening_to: dict[str, anyio.CapacityLimiter] = {}
        self._failures: dict[str, int] = {}
        #: Calls left to the other processes for want of room, oldest first (see _defer).
        self._deferred: OrderedDict[str, SessionNotify] = OrderedDict()
        #: Calls released because the handler raised on them, never to be claimed again here.
        self._given_up: OrderedDict[str, None] = OrderedDict()
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._control: Control | None = None
        self._supervisor: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._fatal: WSSError | None = None
        #: Opens the connections, makes the REST requests (TLS context, credentials, errors).
        self._connector = Connector(config)
        self._call_flow: CallFlowSetup | None = None
        self._draining = False
        self._changed = anyio.Event()
        #: The control connection's id on the server (``smWsId``), while connected.
        self.connection_id: str | None = None
        #: What this client did so far (counters for monitoring; see :class:`ClientStats`).
        self.stats = ClientStats()
        #: The most recent failures of the application's handlers: ``(call id, exception)``
        #: (for tests, which should fail on them, and monitoring).
        self.handler_errors: list[tuple[str, BaseException]] = []

    @property
    def reconnects(self) -> int:
        """How many times the control connection was re-established after a loss."""
        return self.stats.reconnects

    def __repr__(self) -> str:
        state = "connected" if self._control is not None else "disconnected"
        return f"<TelcoflowClient {self.config.base_url} {state} calls={len(self._calls)}>"

    # --- public API ------------------------------------------------------------------------------

    @overload
    def on(self, event: str, handler: None = None) -> Callable[[H], H]: ...
    @overload
    def on(self, event: str, handler: H) -> H: ...
    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register a handler: ``@client.on(events.INCOMING_CALL)``; it gets the ``ActiveCall``.

        Each call's handler runs in its own task once the media connection is open; a handler
        that raises is logged with the call id and never takes the client down.
        """
        return self._handlers.on(event, handler)

    def get_call(self, call_id: str) -> ActiveCall | None:
        """The call while it is active, else ``None``."""
        return self._calls.get(call_id)

    @property
    def calls(self) -> list[ActiveCall]:
        """The active calls."""
        return list(self._calls.values())

    @property
    def connected(self) -> bool:
        """True while the control connection is up."""
        return self._control is not None

    @property
    def draining(self) -> bool:
        """True while :meth:`drain` runs: no new call is claimed."""
        return self._draining

    def incoming_calls(self) -> IncomingCalls:
        """The calls taken from now on, as an async iterator (instead of ``on``)::

        async for call in client.incoming_calls():
            tg.start_soon(agent, call)
        """
        return self._handoff.subscribe()

    async def dial(self, to: str, *, ring_time_seconds: int = 60) -> ActiveCall:
        """Call ``to`` (E.164, e.g. ``"+6590000003"``) from the connector's number.

        Returns the :class:`ActiveCall` (``direction`` "MO", state ANSWERED) once the remote party
        answers; its media runs in this client like any call's. Raises
        :class:`WSSCallCommandError` whose ``error_code`` says why there is no call:
        ``CALL_UNANSWERED`` (not answered within ``ring_time_seconds``), ``CALL_REJECTED``,
        ``CHANNEL_NOT_CONFIGURED`` (the call flow allows no outbound calls),
        ``QUOTA_EXCEEDED``, ``OUTBOUND_OVERFLOW`` or ``SESSION_ALREADY_EXISTS`` (a call to that
        number is already open).
        """
        if not isinstance(to, str) or not to.strip() or len(to) > 64:
            raise ValueError(f"to must be a phone number (E.164), not {to!r}")
        check_ring_time(ring_time_seconds)
        control = self._require_control("dial")
        response = await control.request(
            SessionCreate(Channel.TELCO.value, to, control.proto.new_request_id())
        )
        if not response.ok:
            raise self._dial_error(to, response.error_code or "UNKNOWN", "the server refused")
        content = response.content if isinstance(response.content, dict) else {}
        session_id = content.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise WSSConnectionError(f"session.create for {to}: the response has no sessionId")
        if content.get("created", True) is False:
            raise self._dial_error(
                to, ErrorCode.SESSION_ALREADY_EXISTS, f"session {session_id} is already open"
            )
        session = _Session(session_id, Direction.OUTBOUND, time.time())
        self._sessions[session_id] = session
        self._notify_changed()
        result: list[ActiveCall | BaseException] = []
        ready = anyio.Event()
        assert self._tg is not None
        self._tg.start_soon(self._run_dialled, session, ring_time_seconds, result, ready)
        try:
            await ready.wait()
        except BaseException:
            session.scope.cancel()  # the dialling task closes the session on its way out
            raise
        outcome = result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def setup_call_flow(self, inbound: str = "ALL", outbound: bool = True) -> None:
        """Which calls this connection handles: ``inbound`` ``"ALL"``, ``"MISSED_ONLY"`` (only
        calls the number's own phone did not answer) or ``"NO"``; ``outbound`` whether
        :meth:`dial` may call out. Kept, and sent again after every reconnect."""
        try:
            flow = InboundCallFlow(inbound)
        except ValueError:
            raise ValueError(
                f"inbound must be 'ALL', 'MISSED_ONLY' or 'NO', not {inbound!r}"
            ) from None
        if not isinstance(outbound, bool):
            raise ValueError(f"outbound must be a boolean, not {outbound!r}")
        control = self._require_control("set up the call flow")
        self._call_flow = CallFlowSetup(flow.value, outbound, False, False, "")
        await self._send_call_flow(control)

    async def list_sessions(
        self,
        *,
        channel: str | None = None,
        remote_address: str | None = None,
        state: str | None = "OPEN",
    ) -> list[SessionRecord]:
        """The connector's sessions, from the REST plane (``state=None``: open and closed)."""
        params = {
            key: value
            for key, value in (
                ("channel", channel),
                ("remoteAddress", remote_address),
                ("state", state),
            )
            if value is not None
        }
        body = await self._rest("GET", "/public/v1/sessions", params=params)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise WSSConnectionError("session list response has no 'items' list")
        return [SessionRecord.from_json(item) for item in items]

    async def close_session(self, session_id: str) -> bool:
        """Close a session over the REST plane (for a call, the agent leaves it as with
        ``call.close``); False if the server no longer knows it (already closed)."""
        try:
            await self._rest("POST", f"/public/v1/sessions/{session_id}/close")
        except WSSRequestError as exc:
            if exc.error_code == ErrorCode.SESSION_NOT_FOUND:
                return False
            raise
        return True

    async def drain(self, timeout: float) -> None:
        """Stop taking new calls, let the active ones finish for up to ``timeout`` seconds, then
        close what is left (the agent leaves) and disconnect. For rolling deploys: the
        connector's other processes take the calls notified meanwhile."""
        logger.info("draining: no new calls; %d active", len(self._sessions))
        self._draining = True
        try:
            with anyio.move_on_after(timeout):
                while self._sessions:
                    await self._changed.wait()
        finally:
            self._draining = False
            await self._shutdown()

    async def __aenter__(self) -> TelcoflowClient:
        if self._tg is not None:
            raise RuntimeError("this TelcoflowClient is already running")
        stack = AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        try:
            await self.connect()
        except BaseException:
            await self._exit_tasks(None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._shutdown()
        finally:
            await self._exit_tasks(exc)

    async def _exit_tasks(self, exc: BaseException | None) -> None:
        """Stop the client's tasks. An internal error is raised unless the application's own
        exception is already on its way out, which then wins (the internal one as its context)."""
        stack, tg = self._stack, self._tg
        self._stack = self._tg = None
        assert stack is not None
        assert tg is not None
        tg.cancel_scope.cancel()
        cancelled = anyio.get_cancelled_exc_class()
        try:
            await stack.aclose()
        except BaseExceptionGroup as group:
            internal = unwrap(group)
            # A cancellation on its way out may be the one the failing task caused: the
            # internal error is the story then, not the cancellation.
            if exc is None or isinstance(exc, cancelled) or isinstance(internal, cancelled):
                raise internal from None
            logger.debug("internal error hidden by the application's: %r", internal)
            if exc.__context__ is None:
                exc.__context__ = internal

    async def connect(self) -> None:
        """Open the control connection (a no-op while it is open).

        Raises :class:`WSSAuthenticationError` for refused credentials and
        :class:`WSSConnectionError` when the server cannot be reached, refuses our protocol
        version (HTTP 426) or refuses the setup.
        """
        if self._control is not None:
            return
        self._fatal = None
        self._stopped = anyio.Event()
        self._control = await self._open_control()
        if self._tg is not None:
            # The scope exists before the task starts, so a shutdown that comes first stops it.
            self._supervisor = anyio.CancelScope()
            self._tg.start_soon(self._supervise, self._supervisor)

    async def disconnect(self) -> None:
        """Close every active call (the agent leaves) and the control connection.

        :meth:`run_forever` then returns.
        """
        await self._shutdown()

    async def run_forever(self) -> None:
        """Serve calls until :meth:`disconnect`; cancelling it shuts the client down cleanly.

        Outside ``async with`` it opens (and finally closes) the client itself. Raises the error
        that stopped the client when it gave up (for example refused credentials on reconnect).
        """
        if self._tg is None:
            async with self:
                await self._wait_stopped()
        else:
            await self._wait_stopped()

    async def _wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    # --- connections -----------------------------------------------------------------------------

    async def _open_control(self) -> Control:
        control = await self._connector.open_control()
        self.connection_id = control.sm_ws_id
        return control

    def _require_control(self, what: str) -> Control:
        if self._control is None or self._tg is None:
            raise WSSConnectionError(f"cannot {what}: the control connection is not open")
        return self._control

    async def _supervise(self, scope: anyio.CancelScope) -> None:
        """Keep the control connection up until disconnect or a fatal error."""
        backoff = Backoff(self.config.reconnect)
        with scope:
            while True:
                control = self._control
                if control is None:
                    return  # shut down before this task started
                await self._serve_control(control)
                self._control = None
                self.connection_id = None
                self._control_lost()
                if self._stopped.is_set():
                    return
                if anyio.current_time() - control.opened_at >= STABLE_CONNECTION_S:
                    backoff.reset()
                while self._control is None:
                    if backoff.exhausted:
                        self._stop(
                            WSSConnectionError(
                                "control connection lost; gave up after "
                                f"{backoff.attempts} attempts"
                            )
                        )
                        return
                    delay = backoff.next_delay()
                    logger.info("reconnecting in %.2f s (attempt %d)", delay, backoff.attempts)
                    await anyio.sleep(delay)
                    try:
                        self._control = await self._open_control()
                    except WSSError as exc:
                        if isinstance(exc, WSSAuthenticationError) or (
                            isinstance(exc, WSSConnectionError) and exc.fatal
                        ):
                            logger.error("reconnect refused, not retrying: %s", exc)
                            self._stop(exc)
                            return
                        logger.warning("reconnect failed: %s", exc)
                self.stats.reconnects += 1
                if self._call_flow is not None:
                    assert self._tg is not None
                    self._tg.start_soon(self._resend_call_flow, self._control)

    def _stop(self, fatal: WSSError | None) -> None:
        self._fatal = fatal
        self._stopped.set()

    async def _serve_control(self, control: Control) -> None:
        c = self.config
        try:
            async with open_link(
                control.conn,
                control.proto.receive,
                logger=logger,
                ping_interval=c.ping_interval,
                ping_timeout=c.ping_timeout,
            ) as link:
                async for event in link:
                    match event:
                        case RequestCompleted():
                            control.completed(event)
                        case SessionNotify():
                            self._notified(event)
                        case CallIn():
                            self._call_in(event)
                        case SessionClosed():
                            self._session_closed(event)
                        case ErrorMessage(code=code, message=message):
                            self._log_failure(
                                "server-errors",
                                "server error on control connection: %s: %s",
                                code,
                                message,
                            )
                        case MessageIgnored(reason=reason):
                            logger.debug("%s", reason)
                        case UnknownMessage(type=kind):
                            logger.debug("ignoring control frame of unknown type %r", kind)
                        case _:
                            logger.debug("ignoring %r", event)
            if not self._stopped.is_set():
                logger.warning("control connection lost: %s", link.closed)
        finally:
            control.lost()
            await control.conn.aclose()

    def _control_lost(self) -> None:
        """The server unbinds our sessions: those without a media connection yet are given up
        (it notifies them again, to us too once we are back); calls go on."""
        for session in list(self._sessions.values()):
            if session.call is None and session.call_in is None:
                session.scope.cancel()

    async def _send_call_flow(self, control: Control) -> None:
        flow = self._call_flow
        assert flow is not None
        msg = attrs.evolve(flow, req_id=control.proto.new_request_id())
        response = await control.request(msg)
        if not response.ok:
            raise WSSRequestError(
                f"call_flow.setup refused: {response.error_code}",
                error_code=response.error_code,
                error_content=response.error_content,
            )
        logger.info("call flow set: inbound %s, outbound %s", flow.inbound_call, flow.outbound_call)

    async def _resend_call_flow(self, control: Control) -> None:
        try:
            await self._send_call_flow(control)
        except WSSError as exc:
            logger.warning("call flow not restored after reconnect: %s", exc)

    # --- REST plane ------------------------------------------------------------------------------

    async def _rest(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        if self._tg is None or self._stopped.is_set():
            raise WSSConnectionError(f"cannot {method} {path}: the client is not running")
        return await self._connector.rest(method, path, params)

    # --- sessions --------------------------------------------------------------------------------

    def _notified(self, note: SessionNotify) -> None:
        sid = note.session_id
        if note.channel != Channel.TELCO:
            logger.debug("session %s: channel %r is not served by this SDK", sid, note.channel)
            return
        held = self._sessions.get(sid)
        if held is not None and not held.released:
            logger.debug("session %s notified again (%s); already ours", sid, note.activity)
            return
        if self._stopped.is_set() or self._tg is None:
            logger.debug("session %s notified while shutting down; not claimed", sid)
            return
        if self._draining:
            logger.info("session %s notified while draining; left to other processes", sid)
            return
        if sid in self._given_up:
            logger.info("session %s: its handler failed here; left to other processes", sid)
            return
        if sum(s.call is None for s in self._sessions.values()) >= MAX_CLAIMS_IN_FLIGHT:
            self._log_failure(
                "claims", "session %s not claimed: %d claims in flight", sid, MAX_CLAIMS_IN_FLIGHT
            )
            self._defer(note)
            return
        limit = self.config.max_calls
        if limit is not None and self._taken() >= limit:
            logger.info(
                "session %s not claimed: at max_calls (%d); left to other processes", sid, limit
            )
            self._defer(note)
            return
        self._deferred.pop(sid, None)
        if note.activity not in (Activity.NEW_INCOMING_CALL, Activity.RESUME):
            logger.debug("session %s: activity %r, claimed as a call", sid, note.activity)
        logger.info("session %s notified (%s from %s)", sid, note.activity, note.remote_address)
        session = _Session(sid, Direction.INBOUND, note.created_at)
        self._sessions[sid] = session
        self._handoff.expect(session)
        self._notify_changed()
        self._tg.start_soon(self._run_inbound, session)

    def _defer(self, note: SessionNotify) -> None:
        """Keep a call left to the others for want of room: if room frees up while it may
        still ring, claim it then (the others may have been full too, or their claims of the
        same calls were what took our room)."""
        deferred = self._deferred
        deferred.pop(note.session_id, None)
        deferred[note.session_id] = note
        while len(deferred) > MAX_DEFERRED:
            deferred.popitem(last=False)

    def _room_freed(self) -> None:
        """A claim failed or a call ended: claim the oldest deferred call, if it fits now."""
        if not self._deferred or self._draining or self._stopped.is_set():
            return
        limit = self.config.max_calls
        while self._deferred and (limit is None or self._taken() < limit):
            _, note = self._deferred.popitem(last=False)
            logger.info("session %s: room again; claiming it", note.session_id)
            self._notified(note)

    def _call_in(self, msg: CallIn) -> None:
        session = self._sessions.get(msg.session_id)
        if session is None:
            logger.debug("call.in for session %s, which is not ours", msg.session_id)
            return
        if session.closed is not None:
            logger.debug("call.in for session %s, which is closed; ignored", msg.session_id)
            return
        if session.call_in is not None:
            logger.debug("session %s: call.in again; its call is already ours", msg.session_id)
            return
        session.call_in = msg
        session.signal.set()

    def _session_closed(self, msg: SessionClosed) -> None:
        self._deferred.pop(msg.session_id, None)  # it ended: nothing to claim later
        session = self._sessions.get(msg.session_id)
        if session is None:
            logger.debug("session %s closed (%s); not ours", msg.session_id, msg.reason)
            return
        session.closed = msg
        session.signal.set()
        if session.call is None:
            # Claimed but not connected: the call ended before we could take it.
            logger.info(
                "session %s closed before its call was taken (%s)", msg.session_id, msg.reason
            )
            if session.call_in is not None:
                session.scope.cancel()  # its media connection is opening: give it up
        else:
            # The media plane's call.terminated is the authority for a connected call.
            logger.debug("session %s closed (%s)", msg.session_id, msg.reason)

    async def _claim(self, session: _Session, control: Control) -> bool:
        """Claim and ready ``session``; False if another process has it or it is gone."""
        response = await control.request(SessionOpen(session.id, control.proto.new_request_id()))
        if not response.ok:
            code = response.error_code
            content = response.error_content if isinstance(response.error_content, dict) else {}
            self.stats.claims_lost += 1
            if code == ErrorCode.SESSION_BUSY:
                logger.debug(
                    "session %s taken by another process (%s)",
                    session.id,
                    content.get("boundSmWsId"),
                )
            elif code in (ErrorCode.SESSION_CLOSED, ErrorCode.SESSION_NOT_FOUND):
                logger.info("session %s ended before it was claimed (%s)", session.id, code)
            else:
                self._log_failure("claims", "session %s: claim refused: %s", session.id, code)
            return False
        await control.send(SessionReady(session.id))
        return True

    async def _wait_call_in(self, session: _Session, timeout: float) -> CallIn:
        """``call.in`` of a readied session; ``_SessionEnded`` if the session closes first."""
        with anyio.fail_after(timeout):
            await session.signal.wait()
        if session.closed is not None:  # a closed session never yields a call
            raise _SessionEnded(session.closed)
        assert session.call_in is not None
        return session.call_in

    async def _run_inbound(self, session: _Session) -> None:
        SESSION_ID.set(session.id)
        try:
            await self._take_inbound(session)
        except Exception:
            # A bug here must cost this one call, never the client and its other calls.
            logger.exception("session %s: internal error; the call is given up", session.id)

    async def _take_inbound(self, session: _Session) -> None:
        call: ActiveCall | None = None
        try:
            with session.scope:
                control = self._control
                if control is None:
                    return
                try:
                    delay = min(CLAIM_DELAY_PER_CALL_S * (self._taken() - 1), CLAIM_DELAY_MAX_S)
                    if delay > 0:
                        await anyio.sleep(delay)
                        if session.closed is not None or self._draining:
                            return
                    if not await self._claim(session, control):
                        return
                    call_in = await self._wait_call_in(session, self.config.request_timeout)
                except (WSSError, _SessionEnded) as exc:
                    logger.info("session %s not taken: %s", session.id, exc)
                    return
                except TimeoutError:
                    self._log_failure(
                        "claims", "session %s: no call.in after session.ready", session.id
                    )
                    return
                call = await self._open_call(session, call_in, CallState.PENDING)
            if call is not None:
                await self._serve_call(call, self._incoming_call)
        finally:
            self._handoff.done(session)
            self._session_done(session)

    async def _run_dialled(
        self,
        session: _Session,
        ring_time: int,
        result: list[ActiveCall | BaseException],
        ready: anyio.Event,
    ) -> None:
        call: ActiveCall | None = None
        try:
            with session.scope:
                try:
                    call = await self._take_dialled(session, ring_time)
                    result.append(call)
                except Exception as exc:
                    result.append(exc)
            if not result:  # cancelled: the call ended meanwhile, or the caller of dial gave up
                closed = session.closed
                if closed is not None:
                    code = closed.detail or ErrorCode.CALL_TERMINATED.value
                    result.append(self._dial_error(session.id, code, closed.reason))
                else:
                    result.append(self._dial_error(session.id, "CANCELLED", "dialling cancelled"))
            ready.set()
            if call is not None:
                await self._serve_call(call, None)
        finally:
            ready.set()
            if call is None and session.closed is None and not self._stopped.is_set():
                with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_TIMEOUT):
                    try:
                        await self.close_session(session.id)  # stop the remote phone ringing
                    except WSSError as exc:
                        logger.debug("session %s: close after a failed dial: %s", session.id, exc)
            self._session_done(session)

    async def _take_dialled(self, session: _Session, ring_time: int) -> ActiveCall:
        """Claim, ready and connect a dialled session once its remote party answers."""
        control = self._require_control("dial")
        if not await self._claim(session, control):
            raise self._dial_error(session.id, ErrorCode.SESSION_BUSY, "claim refused")
        try:
            call_in = await self._wait_call_in(session, ring_time + DIAL_GRACE_S)
        except _SessionEnded as ended:
            code = ended.closed.detail or ErrorCode.CALL_UNANSWERED.value
            raise self._dial_error(session.id, code, ended.closed.reason) from None
        except TimeoutError:
            why = f"no answer within {ring_time} s"
            raise self._dial_error(session.id, ErrorCode.CALL_UNANSWERED, why) from None
        call = await self._open_call(session, call_in, CallState.ANSWERED)
        if call is None:
            raise WSSMediaError(f"dialled call {call_in.call_id}: its media did not open")
        return call

    @staticmethod
    def _dial_error(target: str, code: str, why: str) -> WSSCallCommandError:
        return WSSCallCommandError(
            f"dial {target}: no call ({code}: {why})",
            command="dial",
            error_code=str(code),
            error_message=why,
        )

    def _taken(self) -> int:
        """Sessions that count against ``max_calls``: claimed and not yet over."""
        return sum(not s.released for s in self._sessions.values())

    def _session_done(self, session: _Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._notify_changed()
            self._room_freed()

    async def _open_call(
        self, session: _Session, call_in: CallIn, state: CallState
    ) -> ActiveCall | None:
        """Open the media connection of ``call_in``; the call, or None if it cannot be opened."""
        c = self.config
        url = call_in.url
        if (
            url.startswith("ws://")
            and c.base_url.startswith("wss://")
            and not c.allow_insecure_media
        ):
            logger.error(
                "call %s refused: its media URL is plain ws:// while the control connection is "
                "wss:// (the token and the audio would travel in clear text; set "
                "allow_insecure_media=True to allow it)",
                call_in.call_id,
            )
            return None
        if self._opening is None:
            self._opening = anyio.CapacityLimiter(MAX_OPENING_CALLS)
        try:
            host = urlsplit(url).netloc
        except ValueError as exc:  # an invalid IPv6 literal, say
            self._log_failure(
                "media", "call %s: its media URL is invalid: %s", call_in.call_id, exc
            )
            return None
        if self._live_already(call_in.call_id):  # spare opening a connection for nothing
            return None
        per_host = self._opening_to.get(host)
        if per_host is None:
            per_host = self._opening_to[host] = anyio.CapacityLimiter(MAX_OPENING_PER_HOST)
        try:
            async with per_host, self._opening:
                try:
                    with anyio.fail_after(c.connect_timeout):
                        conn = await self._connector.open_media(call_in)
                except (ConnectFailed, TimeoutError) as exc:
                    what = f"call {call_in.call_id}: cannot open its media: {exc or 'timed out'}"
                    self._log_failure("media", "%s", WSSMediaError(what))
                    return None
        finally:
            if not per_host.borrowed_tokens and not per_host.statistics().tasks_waiting:
                self._opening_to.pop(host, None)
        # From these checks to the call's entry in _calls below there is no checkpoint: the
        # client cannot stop, nor another session take this call id, in between.
        if self._stopped.is_set():  # opened just as the client shut down: leave it to the server
            await conn.aclose()
            return None
        if self._live_already(call_in.call_id):  # another session took it while this one opened
            await conn.aclose()
            return None
        details = CallDetails(
            call_id=call_in.call_id,
            session_id=session.id,
            from_number=call_in.from_number,
            to_number=call_in.to_number,
            direction=session.direction.value,
            org_uuid=call_in.org_uuid,
            created_at=session.created_at,
        )
        call = ActiveCall(
            details,
            c,
            conn,
            on_ended=self._call_ended,
            on_handler_error=self._handler_error,
            state=state,
        )
        session.call = call
        self._calls[call.call_id] = call
        self.stats.calls_taken += 1
        CALL_ID.set(call.call_id)  # this task's context: the call's tasks inherit it
        logger.info("call %s taken (session %s)", call.call_id, session.id)
        self._notify_changed()
        return call

    def _live_already(self, call_id: str) -> bool:
        """True (and logged) if a call with ``call_id`` is live: one id, one call."""
        if call_id not in self._calls:
            return False
        self._log_failure(
            "media", "call %s: a call with this id is already live; not taken", call_id
        )
        return True

    def _log_failure(self, kind: str, message: str, *args: Any) -> None:
        """A failure of ``kind``: at WARNING the first few times, then one in many (with the
        count), the rest at DEBUG."""
        n = self._failures[kind] = self._failures.get(kind, 0) + 1
        if n <= LOUD_FAILURES:
            logger.warning(message, *args)
        elif n % QUIET_EVERY == 0:
            logger.warning(message + " (%d such failures so far)", *args, n)
        else:
            logger.debug(message, *args)

    async def _serve_call(
        self, call: ActiveCall, handler: Callable[[ActiveCall], Any] | None
    ) -> None:
        self._serving.add(call)
        try:
            await call._serve(handler)
        finally:
            self._serving.discard(call)

    async def _incoming_call(self, call: ActiveCall) -> None:
        # The application gets calls in the order they were notified (see Handoff); this is
        # the handler's task, not the call's I/O, so its media is served meanwhile.
        session = self._sessions.get(call.session_id)
        if session is not None:
            await self._handoff.wait_turn(session)
        for _ in range(self._handoff.offer(call)):
            self._log_failure(
                "consumer", "call %s: incoming_calls() consumer is not keeping up", call.call_id
            )
        await self._handlers.fire(
            events.INCOMING_CALL, call, logger, f"call {call.call_id}", call.handler_failed
        )

    def _handler_error(self, call: ActiveCall, exc: BaseException) -> None:
        self.stats.handler_errors += 1
        self.handler_errors.append((call.call_id, exc))
        del self.handler_errors[:-MAX_HANDLER_ERRORS_KEPT]

    def _call_ended(self, call: ActiveCall, released_after_failure: bool) -> None:
        reason = call.termination_reason or "unknown"
        self.stats.calls_ended[reason] = self.stats.calls_ended.get(reason, 0) + 1
        self.stats.record_call(call)
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        session = self._sessions.get(call.session_id)
        if session is not None and session.call is call:
            # Over for us (its handler may still run): a later notification of the session (the
            # server lets it ring on once the agent's media is gone) is a new call.
            session.released = True
        if released_after_failure:
            self._given_up[call.session_id] = None
            while len(self._given_up) > MAX_DEFERRED:
                self._given_up.popitem(last=False)
        self._notify_changed()
        self._room_freed()

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # --- shutdown --------------------------------------------------------------------------------

    async def _leave(self, call: ActiveCall) -> None:
        """The agent leaves ``call``: politely where the state allows (waiting for the server's
        ``call.terminated``, so the call ends with the server's reason), then locally; then its
        handlers see ``CALL_TERMINATED`` before its tasks are cancelled."""
        with anyio.move_on_after(LEAVE_TIMEOUT):
            if call.is_active and call.state in (CallState.ANSWERED, CallState.CONNECTED):
                try:
                    await call.close()
                except WSSError as exc:
                    logger.debug("call %s: close on exit failed: %s", call.call_id, exc)
            if call.is_active and call.state is CallState.DISCONNECTED:
                await call.wait_terminated()  # closed by us or the app; the event is on its way
        await call.force_disconnect()
        with anyio.move_on_after(LEAVE_TIMEOUT):
            await call._wait_delivered()
        call._cancel()

    async def _shutdown(self) -> None:
        with anyio.CancelScope(shield=True):
            self._stop(self._fatal)
            self._handoff.close()
            if self._supervisor is not None:
                self._supervisor.cancel()
            for session in list(self._sessions.values()):
                if session.call is None:
                    session.scope.cancel()
            async with anyio.create_task_group() as tg:
                for call in list(self._calls.values()):
                    tg.start_soon(self._leave, call)
            for call in list(self._serving):  # ended calls whose handlers still run
                call._cancel()
            control, self._control = self._control, None
            if control is not None:
                control.lost()
                await control.conn.aclose()
            await self._connector.aclose()
