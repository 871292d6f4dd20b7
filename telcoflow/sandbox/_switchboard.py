"""The sandbox's session switchboard: control connections, sessions, notifications, claims,
media tokens, call flows and outbound calls (PROTOCOL.md, "Control plane").

Who owns what:

- a :class:`SmConnection` is one client's control connection after its ``setup``: its call flow,
  its outbox (everything sent to it goes through one queue, in order, so that no task ever
  waits on a slow client to notify the others);
- a :class:`SimSession` is one call's session: who it is bound to, whether it was readied, its
  deadline, the connections notified of it in its current round, its media token;
- the :class:`Switchboard` owns both tables and the only code that changes a binding. Calls
  (:class:`~telcoflow.sandbox._call.SimCall`) tell it what happens to them through the
  ``CallHost`` interface; they never see a connection.

The rules, in the order a call meets them:

1. a new inbound call is notified (``NEW_INCOMING_CALL``) to every live connection of its
   connector whose call flow takes it (``ALL``; ``MISSED_ONLY`` only once the number's own phone
   rang out; ``NO`` never);
2. the first ``session.open`` binds the session; other connections get ``SESSION_BUSY``, the
   bound one ``ok`` again;
3. ``call.in`` (with a new media token) goes only to the bound connection, only after its
   ``session.ready``;
4. a session claimed but not readied within the claim timeout, or readied without media within
   the media timeout, or whose connection is lost before its media opened, or whose media
   connection closed while it still rang, is unbound and notified again (``RESUME``) to the live
   connections, each no sooner than :data:`RESUME_AFTER_SETUP_S` after its ``setup.done``;
5. when the call is over for the agent, ``session.closed`` goes to the bound connection, or to
   every connection notified while nobody holds it.

A media token is valid from its ``call.in`` until its first successful use, a later ``call.in``
of the same session, the end of the call, or its time to live (at least 60 s); a refused attempt
(another call's URL, say) does not use it up.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.abc
import attrs

from .._core import (
    CLAIM_TIMEOUT_S,
    MEDIA_TIMEOUT_S,
    MIN_TOKEN_TTL_S,
    RESUME_AFTER_SETUP_S,
    Activity,
    AudioMode,
    BadRequest,
    CallFlowSetup,
    CallIn,
    CallState,
    Channel,
    CloseReason,
    ControlEvent,
    ControlMessage,
    ControlProtocol,
    ControlRequest,
    Direction,
    ErrorCode,
    ErrorMessage,
    InboundCallFlow,
    Initiator,
    LocalProtocolError,
    ProtocolError,
    Response,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    SessionState,
    Setup,
    SetupDone,
    TerminationReason,
    WaMessageOut,
)
from .._net import ConnectionClosed, ServerHandshake, WebSocketConnection, open_link
from ._call import CALL_REJECTED, CALL_UNANSWERED, SimCall
from ._clock import MediaClock
from ._faults import FaultInjector
from ._media import PING_INTERVAL_S, PING_TIMEOUT_S, AgentMedia
from ._spec import CallSpec, NumberSpec

__all__ = ["Connector", "Retention", "SimSession", "SmConnection", "Switchboard"]

logger = logging.getLogger("telcoflow.sandbox")

#: A client must send ``setup`` this soon after its control connection opens.
SETUP_TIMEOUT_S = 10.0
#: Messages queued for one control connection at most; a client that reads none of them for
#: that long is dropped instead of holding the sandbox's memory.
OUTBOX_LIMIT = 10_000
#: Outbound calls a connector may have open at once (``OUTBOUND_OVERFLOW`` past it).
MAX_OUTBOUND_CALLS = 500
#: How often the switchboard looks at its deadlines (claim, media, tokens).
HOUSEKEEPING_S = 0.1
#: A phone number as ``session.create`` accepts it: E.164, the plus optional.
_E164 = re.compile(r"^\+?[0-9]{3,20}$")


@attrs.frozen
class Connector:
    """An (API key, connector uuid) pair the sandbox accepts, with the connector's own phone
    number (what callers dial, and the caller id of its outbound calls) and organisation."""

    api_key: str = attrs.field(repr=False)
    connector_uuid: str
    number: str = "+6590000002"
    org_uuid: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    #: A PEM certificate of the application's own (its production ``cert_path``): with
    #: ``tls=True`` a mutual-TLS client presenting exactly this certificate is this connector,
    #: whoever issued it. Without it, the sandbox issues the connector a certificate.
    client_cert: str | None = None


@attrs.frozen(kw_only=True)
class Retention:
    """How much of the past the sandbox keeps (its memory must not grow without bound on a box
    that runs for days): the last ``ended_calls`` ended calls (their records, for the HTTP API),
    the recordings of the last ``recordings`` of them (a minute of a call's recordings is about
    8.6 MB), and none older than ``max_age_s`` seconds. None: no bound of that kind."""

    ended_calls: int | None = 1000
    recordings: int | None = 100
    max_age_s: float | None = 3600.0


@attrs.frozen
class _CallFlow:
    inbound: InboundCallFlow = InboundCallFlow.ALL
    outbound: bool = True


class SmConnection:
    """One client's control connection (a "session manager" connection), after its setup."""

    def __init__(
        self,
        conn: WebSocketConnection,
        proto: ControlProtocol,
        connector: Connector,
        *,
        sample_rate: int,
        audio_mode: AudioMode,
        media_base: str,
    ) -> None:
        self.conn = conn
        self.proto = proto
        self.connector = connector
        self.sm_ws_id = f"sm-{uuid.uuid4().hex[:12]}"
        self.sample_rate = sample_rate
        self.audio_mode = audio_mode
        self.media_base = media_base
        self.flow = _CallFlow()
        #: Whether the client ever sent ``call_flow.setup`` (else the connector's defaults).
        self.flow_set = False
        self.joined_at = anyio.current_time()
        self.alive = True
        self._send, self._receive = anyio.create_memory_object_stream[str | bytes](OUTBOX_LIMIT)

    def __repr__(self) -> str:
        return f"<SmConnection {self.sm_ws_id} {self.connector.connector_uuid}>"

    @property
    def connection_id(self) -> str:
        """The connection's id (``setup.done``'s ``smWsId``)."""
        return self.sm_ws_id

    @property
    def connector_uuid(self) -> str:
        return self.connector.connector_uuid

    def push(self, msg: ControlMessage) -> bool:
        """Queue ``msg`` for this connection, in order; False if it is gone (or full: a client
        that reads nothing is dropped)."""
        if not self.alive:
            return False
        try:
            wire = self.proto.send(msg)
        except LocalProtocolError as exc:
            logger.debug("%s: not sent: %s", self.sm_ws_id, exc)
            return False
        return self.push_raw(wire)

    def push_raw(self, wire: str | bytes) -> bool:
        """Queue a frame as it is (a fault's malformed frame)."""
        if not self.alive:
            return False
        try:
            self._send.send_nowait(wire)
        except anyio.WouldBlock:
            logger.warning(
                "%s: %d messages unread; dropping the client", self.sm_ws_id, OUTBOX_LIMIT
            )
            self.alive = False
            self._send.close()
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def close_outbox(self) -> None:
        self.alive = False
        self._send.close()

    async def run_writer(self) -> None:
        """Send what is queued, several messages per write when they pile up."""
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < 64:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self.conn.send_many(batch)
        except ConnectionClosed:
            pass
        finally:
            if not self.alive:
                await self.conn.abort()  # the outbox overflowed: the client is not reading


class SimSession:
    """One call's session on the control plane."""

    def __init__(
        self,
        session_id: str,
        call: SimCall,
        *,
        direction: Direction,
        remote_address: str,
        local_address: str,
    ) -> None:
        self.id = session_id
        self.call = call
        self.direction = direction
        self.initiator = Initiator.SDK if direction is Direction.OUTBOUND else Initiator.CONNECTOR
        self.channel = Channel.TELCO
        self.remote_address = remote_address
        self.local_address = local_address
        self.opened_at = int(time.time())
        self.closed_at: int | None = None
        self.close_reason: CloseReason | None = None
        #: Set by a REST close, so that the end of the call reports it as the reason.
        self.closing_reason: CloseReason | None = None
        self.bound: SmConnection | None = None
        self.readied = False
        self.call_in_sent = False
        #: Connections notified in the current round (reset when the session is unbound).
        self.notified: set[SmConnection] = set()
        #: Every connection ever notified: told of ``session.closed`` while nobody holds it.
        self.ever_notified: set[SmConnection] = set()
        self.activity = Activity.NEW_INCOMING_CALL
        #: How many times it was notified (``session.notify``, to any connection).
        self.offers = 0
        self.deadline: float | None = None
        #: ``MISSED_ONLY`` connections may take it: the number's own phone rang out.
        self.missed = False

    @property
    def open(self) -> bool:
        return self.close_reason is None

    @property
    def has_media(self) -> bool:
        return self.call.agent is not None

    def record(self) -> dict[str, Any]:
        """The session as the REST plane lists it."""
        return {
            "id": self.id,
            "channel": self.channel.value,
            "initiator": self.initiator.value,
            "state": (SessionState.OPEN if self.open else SessionState.CLOSED).value,
            "remoteAddress": self.remote_address,
            "localAddress": self.local_address,
            "openedAt": self.opened_at,
            "closedAt": self.closed_at,
        }

    def content(self) -> dict[str, Any]:
        """``session.open``'s response content."""
        return {
            "session": {
                "id": self.id,
                "channel": self.channel.value,
                "remoteAddress": self.remote_address,
                "localAddress": self.local_address,
                "openedAt": self.opened_at,
            }
        }


@attrs.define
class _Token:
    session: SimSession
    sm: SmConnection
    expires: float


class Switchboard:
    """Sessions, connections and tokens of every connector (see the module's docstring)."""

    def __init__(
        self,
        connectors: list[Connector],
        faults: FaultInjector,
        clock: MediaClock,
        *,
        record: bool,
        claim_timeout: float = CLAIM_TIMEOUT_S,
        media_timeout: float = MEDIA_TIMEOUT_S,
        token_ttl: float = MIN_TOKEN_TTL_S,
        retention: Retention | None = None,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.connectors = {c.connector_uuid: c for c in connectors}
        self._faults = faults
        self._clock = clock
        self._record = record
        self.claim_timeout = claim_timeout
        self.media_timeout = media_timeout
        self.token_ttl = token_ttl
        self._changed = changed
        self.connections: dict[str, list[SmConnection]] = {c: [] for c in self.connectors}
        self.sessions: dict[str, SimSession] = {}
        self.calls: dict[str, SimCall] = {}
        self._by_call: dict[str, SimSession] = {}
        self._tokens: dict[str, _Token] = {}
        self.numbers: dict[str, NumberSpec] = {}
        self.retention = retention or Retention()
        #: Ended calls, oldest first, with when they ended.
        self._ended: deque[tuple[float, SimCall]] = deque()
        self._with_recordings = 0
        self._tg: anyio.abc.TaskGroup | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Run the switchboard's tasks (calls, timers) in ``tg``."""
        self._tg = tg
        tg.start_soon(self._housekeeping)

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the sandbox is not running")
        return self._tg

    async def shutdown(self) -> None:
        """End every call (``server_shutdown``) and close every control connection."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as ending:
                for call in list(self.calls.values()):
                    ending.start_soon(call.end, TerminationReason.SERVER_SHUTDOWN.value)
            for conns in self.connections.values():
                for sm in list(conns):
                    sm.alive = False
                    await sm.conn.aclose(1001, "server shutdown")

    def live(self, connector_uuid: str) -> list[SmConnection]:
        """The live control connections of a connector."""
        return [sm for sm in self.connections.get(connector_uuid, ()) if sm.alive]

    # --- calls -----------------------------------------------------------------------------------

    async def place_call(self, spec: CallSpec, connector: Connector) -> SimCall:
        """A simulated inbound call to ``connector``: notified at once to the connections that
        take it (or to ``MISSED_ONLY`` ones after the number's own phone rang out)."""
        tg = self._task_group()
        to = spec.to_number or connector.number
        call = SimCall(
            self,
            self._faults,
            f"call-{uuid.uuid4().hex[:16]}",
            spec,
            connector_uuid=connector.connector_uuid,
            to_number=to,
            record=self._record,
        )
        session = self._add(call, Direction.INBOUND, remote=spec.from_number, local=to)
        tg.start_soon(self._run_call, call)
        await call.started()
        logger.info("call %s placed (%s -> %s)", call.call_id, spec.from_number, to)
        live = self.live(connector.connector_uuid)
        takes_all = [sm for sm in live if sm.flow.inbound is InboundCallFlow.ALL]
        if not takes_all and any(sm.flow.inbound is InboundCallFlow.MISSED_ONLY for sm in live):
            await call.ring_own_phone(lambda: self._missed(session))
        else:
            self._notify_all(session)
        self._changed()
        return call

    async def _run_call(self, call: SimCall) -> None:
        """A call's task: a failure inside one call ends that call, never the sandbox."""
        try:
            await call.run(self._clock)
        except Exception:
            logger.exception("call %s: failed inside the sandbox; ending it", call.call_id)
            with anyio.CancelScope(shield=True):
                await call.end("server_error")

    def _missed(self, session: SimSession) -> None:
        logger.info("call %s: missed by the number's phone; notifying", session.call.call_id)
        session.missed = True
        self._notify_all(session)

    def _add(self, call: SimCall, direction: Direction, *, remote: str, local: str) -> SimSession:
        session = SimSession(
            f"ses-{uuid.uuid4().hex[:16]}",
            call,
            direction=direction,
            remote_address=remote,
            local_address=local,
        )
        self.sessions[session.id] = session
        self.calls[call.call_id] = call
        self._by_call[call.call_id] = session
        return session

    def session_of(self, call: SimCall) -> SimSession | None:
        return self._by_call.get(call.call_id)

    def describe(self, call: SimCall) -> dict[str, Any]:
        """What the HTTP API shows of a call's session (``CallHost``)."""
        session = self._by_call.get(call.call_id)
        if session is None:
            return {"session_id": None, "bound_to": None, "offers": 0}
        bound = session.bound.sm_ws_id if session.bound is not None else None
        return {"session_id": session.id, "bound_to": bound, "offers": session.offers}

    # --- notifications ---------------------------------------------------------------------------

    def _takes(self, sm: SmConnection, session: SimSession) -> bool:
        if (
            session.direction is Direction.OUTBOUND
            or sm.connector_uuid != session.call.connector_uuid
        ):
            return False
        flow = sm.flow.inbound
        return flow is InboundCallFlow.ALL or (
            flow is InboundCallFlow.MISSED_ONLY and session.missed
        )

    def _waiting(self, session: SimSession) -> bool:
        """Ringing, open, held by nobody and without media: to be notified."""
        return (
            session.open
            and session.bound is None
            and not session.has_media
            and session.call.state is CallState.PENDING
        )

    def _notify(self, sm: SmConnection, session: SimSession, activity: Activity) -> None:
        if sm in session.notified or not self._takes(sm, session):
            return
        note = SessionNotify(
            session_id=session.id,
            channel=session.channel.value,
            remote_address=session.remote_address,
            local_address=session.local_address,
            activity=activity.value,
            created_at=float(int(time.time())),
        )
        if sm.push(note):
            session.offers += 1
            session.notified.add(sm)
            session.ever_notified.add(sm)
            logger.debug("call %s notified to %s (%s)", session.call.call_id, sm.sm_ws_id, activity)

    def _notify_all(self, session: SimSession) -> None:
        """Notify ``session`` to the connections that take it (a RESUME only to those past
        their first second; the younger ones get it when that second is over)."""
        if not self._waiting(session):
            return
        now = anyio.current_time()
        for sm in self.live(session.call.connector_uuid):
            young = now - sm.joined_at < RESUME_AFTER_SETUP_S
            if session.activity is Activity.RESUME and young:
                continue
            self._notify(sm, session, session.activity)

    def _notify_waiting(self, sm: SmConnection) -> None:
        """Tell ``sm`` of every call that rang before it could take it (``RESUME``)."""
        for session in list(self.sessions.values()):
            if self._waiting(session) and sm.alive:
                self._notify(sm, session, Activity.RESUME)

    async def _welcome(self, sm: SmConnection) -> None:
        """A connection's first second is over: it may now be told of calls rung before it."""
        await anyio.sleep(max(0.0, sm.joined_at + RESUME_AFTER_SETUP_S - anyio.current_time()))
        self._notify_waiting(sm)

    def _unbind(self, session: SimSession, why: str) -> None:
        """Nobody holds ``session`` any more: notify it again, unless it is over or has media."""
        if not session.open or session.call.ended:
            return
        session.bound = None
        session.readied = False
        session.call_in_sent = False
        session.deadline = None
        session.notified.clear()
        session.activity = Activity.RESUME
        if session.direction is Direction.OUTBOUND:
            # An outbound call exists for the connection that dialled it: without it, it ends.
            self._task_group().start_soon(session.call.end, TerminationReason.AGENT_CLOSE.value)
            return
        logger.info("call %s: %s; notifying it again", session.call.call_id, why)
        self._notify_all(session)
        self._changed()

    # --- control connections ---------------------------------------------------------------------

    async def serve_control(
        self, conn: WebSocketConnection, connector: Connector, media_base: str
    ) -> None:
        """One control connection, from its setup until it closes."""
        proto = ControlProtocol(Role.SERVER)
        setup = await self._receive_setup(conn, proto)
        if isinstance(setup, str):
            try:
                await conn.send(proto.send(ErrorMessage("INVALID_SETUP", setup)))
            except (ConnectionClosed, ProtocolError):
                pass
            await conn.aclose(1008, "invalid setup")
            return
        sm = SmConnection(
            conn,
            proto,
            connector,
            sample_rate=setup.sample_rate,
            audio_mode=AudioMode(setup.audio_mode),
            media_base=media_base,
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sm.run_writer)
                # Ready, and visible to new calls, in the same step as setup.done is queued:
                # notifications can only follow it on the wire.
                sm.push(SetupDone(sm.sm_ws_id))
                self.connections[connector.connector_uuid].append(sm)
                logger.info(
                    "control connection %s (%s) ready", sm.sm_ws_id, connector.connector_uuid
                )
                self._changed()
                tg.start_soon(self._welcome, sm)
                async with open_link(
                    conn,
                    self._decoder(proto),
                    logger=logger,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    loud_level=logging.INFO,
                    task_name="telcoflow.sandbox.control.heartbeat",
                ) as link:
                    async for msg in link:
                        self._handle(sm, msg)
                        if not sm.alive:
                            break
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.connection_gone(sm)
                sm.close_outbox()
                await conn.aclose()

    @staticmethod
    def _decoder(proto: ControlProtocol) -> Callable[[str | bytes], ControlEvent | BadRequest]:
        def decode(raw: str | bytes) -> ControlEvent | BadRequest:
            try:
                return proto.receive(raw)
            except BadRequest as bad:
                return bad  # still answered: INVALID_REQUEST

        return decode

    @staticmethod
    async def _receive_setup(conn: WebSocketConnection, proto: ControlProtocol) -> Setup | str:
        """The client's setup frame, or why there is none."""
        try:
            with anyio.fail_after(SETUP_TIMEOUT_S):
                setup = proto.receive(await conn.receive())
        except TimeoutError:
            return f"no setup within {SETUP_TIMEOUT_S:g} s"
        except ConnectionClosed:
            return "the connection closed before setup"
        except ProtocolError as exc:
            return str(exc)
        if not isinstance(setup, Setup):
            return "the first frame must be setup"
        return setup

    def connection_gone(self, sm: SmConnection) -> None:
        """``sm`` is closed: the sessions it holds without media are notified again."""
        sm.alive = False
        conns = self.connections[sm.connector_uuid]
        if sm not in conns:
            return
        conns.remove(sm)
        logger.info("control connection %s closed", sm.sm_ws_id)
        for session in list(self.sessions.values()):
            session.notified.discard(sm)
            if session.bound is sm and session.open:
                if session.has_media:
                    session.bound = None  # the call goes on; its end is on the media plane
                else:
                    self._unbind(session, f"its connection {sm.sm_ws_id} was lost")
        self._changed()

    def _respond(
        self,
        sm: SmConnection,
        req: ControlRequest | BadRequest,
        ok: bool,
        content: Any = None,
        code: str | None = None,
        error_content: Any = None,
    ) -> None:
        sm.push(Response(req.req_id, ok, content, code, error_content))

    def _handle(self, sm: SmConnection, msg: ControlEvent | BadRequest) -> None:
        match msg:
            case SessionOpen():
                self._open(sm, msg)
            case SessionReady():
                self._ready(sm, msg)
            case SessionCreate():
                self._create(sm, msg)
            case CallFlowSetup():
                self._call_flow(sm, msg)
            case WaMessageOut():
                self._respond(sm, msg, False, None, ErrorCode.INVALID_CHANNEL, None)
            case BadRequest():
                logger.info("%s: bad request: %s", sm.sm_ws_id, msg)
                self._respond(
                    sm, msg, False, None, ErrorCode.INVALID_REQUEST, {"message": str(msg)}
                )
            case _:
                logger.debug("control %s: ignoring %r", sm.sm_ws_id, msg)

    def _open(self, sm: SmConnection, req: SessionOpen) -> None:
        session = self.sessions.get(req.session_id)
        if session is None or session.call.connector_uuid != sm.connector_uuid:
            self._respond(sm, req, False, None, ErrorCode.SESSION_NOT_FOUND, None)
            return
        if not session.open:
            self._respond(sm, req, False, None, ErrorCode.SESSION_CLOSED, None)
            return
        holder = session.bound
        if holder is sm:
            self._respond(sm, req, True, session.content())
            return
        if (holder is not None and holder.alive) or session.has_media:
            # Nobody holds it but it has media (its connection was lost): the claim that media
            # completed is the one it is bound to.
            agent = session.call.agent
            bound = holder.sm_ws_id if holder is not None else agent.sm_ws_id if agent else ""
            busy = {"boundSmWsId": bound}
            self._respond(sm, req, False, None, ErrorCode.SESSION_BUSY, busy)
            return
        session.bound = sm
        session.readied = False
        session.deadline = anyio.current_time() + self.claim_timeout
        logger.info("call %s claimed by %s", session.call.call_id, sm.sm_ws_id)
        self._respond(sm, req, True, session.content())
        self._changed()

    def _ready(self, sm: SmConnection, msg: SessionReady) -> None:
        session = self.sessions.get(msg.session_id)
        if session is None or session.bound is not sm or not session.open:
            logger.debug(
                "%s: session.ready for %s, which it does not hold", sm.sm_ws_id, msg.session_id
            )
            return
        if session.readied:
            return
        session.readied = True
        call = session.call
        call.set_format(sm.sample_rate, sm.audio_mode)
        if session.direction is Direction.OUTBOUND:
            session.deadline = None  # the ring has its own time; call.in comes when answered
            call.ring_remote()
            self._task_group().start_soon(self._when_answered, session)
            return
        self._send_call_in(session)

    async def _when_answered(self, session: SimSession) -> None:
        call = session.call
        await call.wait_for(lambda c: c.state is not CallState.PENDING)
        if call.state is CallState.ANSWERED and session.open and session.bound is not None:
            self._send_call_in(session)

    def _send_call_in(self, session: SimSession) -> None:
        sm, call = session.bound, session.call
        assert sm is not None
        for token in [t for t, v in self._tokens.items() if v.session is session]:
            del self._tokens[token]  # a later call.in supersedes the earlier's token
        token = secrets.token_urlsafe(32)
        now = anyio.current_time()
        self._tokens[token] = _Token(session, sm, now + self.token_ttl)
        connector = self.connectors[call.connector_uuid]
        msg = CallIn(
            session_id=session.id,
            call_id=call.call_id,
            url=f"{sm.media_base}/v1/agent/media/{call.call_id}",
            token=token,
            org_uuid=connector.org_uuid,
            from_number=call.from_number,
            to_number=call.to_number,
        )
        if sm.push(msg):
            session.call_in_sent = True
            session.deadline = now + self.media_timeout

    def _call_flow(self, sm: SmConnection, req: CallFlowSetup) -> None:
        try:
            inbound = InboundCallFlow(req.inbound_call)
        except ValueError:
            self._respond(
                sm,
                req,
                False,
                None,
                ErrorCode.INVALID_REQUEST,
                {"message": f"inboundCall must be ALL, MISSED_ONLY or NO: {req.inbound_call!r}"},
            )
            return
        sm.flow = _CallFlow(inbound, req.outbound_call)
        sm.flow_set = True
        logger.info("%s: call flow %s, outbound %s", sm.sm_ws_id, inbound.value, req.outbound_call)
        self._respond(sm, req, True, None)
        if anyio.current_time() - sm.joined_at >= RESUME_AFTER_SETUP_S:
            self._notify_waiting(sm)

    def _create(self, sm: SmConnection, req: SessionCreate) -> None:
        if req.channel == Channel.WA:
            self._respond(sm, req, False, None, ErrorCode.CHANNEL_NOT_CONFIGURED, None)
            return
        if req.channel != Channel.TELCO:
            self._respond(
                sm, req, False, None, ErrorCode.INVALID_REQUEST, {"message": "unknown channel"}
            )
            return
        if not sm.flow.outbound:
            self._respond(sm, req, False, None, ErrorCode.CHANNEL_NOT_CONFIGURED, None)
            return
        remote = req.remote_address
        if not _E164.match(remote):
            message = f"remoteAddress must be an E.164 number, not {remote!r}"
            self._respond(sm, req, False, None, ErrorCode.INVALID_REQUEST, {"message": message})
            return
        connector = sm.connector
        mine = [
            s
            for s in self.sessions.values()
            if s.open and s.call.connector_uuid == connector.connector_uuid
        ]
        for session in mine:
            if session.remote_address == remote:
                self._respond(sm, req, True, {"sessionId": session.id, "created": False})
                return
        if sum(s.direction is Direction.OUTBOUND for s in mine) >= MAX_OUTBOUND_CALLS:
            self._respond(sm, req, False, None, ErrorCode.OUTBOUND_OVERFLOW, None)
            return
        number = self.numbers.get(remote, NumberSpec())
        spec = CallSpec(
            from_number=connector.number, to_number=remote, connector_uuid=connector.connector_uuid
        )
        call = SimCall(
            self,
            self._faults,
            f"call-{uuid.uuid4().hex[:16]}",
            spec,
            connector_uuid=connector.connector_uuid,
            to_number=remote,
            direction=Direction.OUTBOUND,
            record=self._record,
            number=number,
        )
        session = self._add(call, Direction.OUTBOUND, remote=remote, local=connector.number)
        # Bound at once to the connection that dialled it: nobody else is told of it.
        session.bound = sm
        session.deadline = anyio.current_time() + self.claim_timeout
        self._task_group().start_soon(self._run_call, call)
        logger.info("call %s: %s dials %s", call.call_id, sm.sm_ws_id, remote)
        self._respond(sm, req, True, {"sessionId": session.id, "created": True})
        self._changed()

    # --- media -----------------------------------------------------------------------------------

    async def serve_media(
        self, handshake: ServerHandshake, call_id: str, decided: Callable[[int], None]
    ) -> None:
        """One agent media connection, from its upgrade until it closes; ``decided`` is told
        the upgrade's answer (101, or the refusal's status) as soon as it is known."""
        auth = handshake.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip()
        token = self._tokens.get(key)
        now = anyio.current_time()
        if token is None or now > token.expires or token.session.call.call_id != call_id:
            # Not used up: the token stays good for its own call (a wrong URL is the client's
            # mistake, not a reason to lose the call).
            decided(401)
            await handshake.reject(401, "invalid or expired media token")
            return
        session = token.session
        call = session.call
        if call.ended or not session.open:
            decided(410)
            await handshake.reject(410, "the call has ended")
            return
        if call.agent is not None:
            decided(409)
            await handshake.reject(409, "the call already has a media connection")
            return
        decided(101)
        del self._tokens[key]
        conn = await handshake.accept(f"sandbox media {call_id}")
        agent = AgentMedia(
            call,
            conn,
            sample_rate=token.sm.sample_rate,
            audio_mode=token.sm.audio_mode,
            sm_ws_id=token.sm.sm_ws_id,
        )
        if not call.can_take_agent():
            # It ended (or another took it) while the upgrade was being answered: tell this
            # agent as it would have been told, then let it go.
            await agent.terminate(call.ended_reason or TerminationReason.SERVER_SHUTDOWN.value)
            await conn.aclose()
            return
        call.attach(agent)
        session.deadline = None
        if session.bound is None and token.sm.alive:
            session.bound = token.sm  # media after the media timeout, before anyone else
        self._changed()
        logger.info("call %s: media connected (%s)", call_id, token.sm.sm_ws_id)
        try:
            await agent.start()
            await agent.serve()
        finally:
            with anyio.CancelScope(shield=True):
                await call.agent_gone(agent)
                await conn.aclose()
                self._changed()

    def agent_media(self, call_id: str | None) -> AgentMedia:
        """The media connection of a call (faults); ``ValueError`` if there is none."""
        call = self.calls.get(call_id or "")
        if call is None:
            raise ValueError(f"no call {call_id!r}")
        if call.agent is None:
            raise ValueError(f"call {call_id} has no media connection")
        return call.agent

    # --- what calls report (CallHost) ------------------------------------------------------------

    def _close(self, session: SimSession, reason: CloseReason, detail: str | None = None) -> None:
        if not session.open:
            return
        session.close_reason = session.closing_reason or reason
        session.closed_at = int(time.time())
        session.deadline = None
        for token in [t for t, v in self._tokens.items() if v.session is session]:
            del self._tokens[token]
        if session.bound is not None and session.bound.alive:
            recipients: Iterable[SmConnection] = [session.bound]
        else:
            recipients = [sm for sm in session.ever_notified if sm.alive]
        closed = SessionClosed(session.id, session.close_reason.value, detail)
        for sm in recipients:
            sm.push(closed)
        self._changed()

    def _retire(self, call: SimCall) -> None:
        """An ended call joins the past, which the retention policy bounds."""
        self._ended.append((anyio.current_time(), call))
        self._with_recordings += 1
        self._apply_retention(anyio.current_time())

    def _apply_retention(self, now: float) -> None:
        keep = self.retention
        ended = self._ended
        while ended and (
            (keep.ended_calls is not None and len(ended) > keep.ended_calls)
            or (keep.max_age_s is not None and now - ended[0][0] > keep.max_age_s)
        ):
            _, old = ended.popleft()
            if not old.recordings_discarded:
                self._with_recordings -= 1
            self._forget(old)
        if keep.recordings is not None and self._with_recordings > keep.recordings:
            for _, old in ended:
                if self._with_recordings <= keep.recordings:
                    break
                if not old.recordings_discarded:
                    old.discard_recordings()
                    self._with_recordings -= 1

    def _forget(self, call: SimCall) -> None:
        self.calls.pop(call.call_id, None)
        session = self._by_call.pop(call.call_id, None)
        if session is not None:
            self.sessions.pop(session.id, None)

    async def call_ended(self, call: SimCall) -> None:
        self._retire(call)
        session = self._by_call.get(call.call_id)
        if session is None:
            return
        detail = {CALL_REJECTED: "CALL_REJECTED", CALL_UNANSWERED: "CALL_UNANSWERED"}.get(
            call.ended_reason or ""
        )
        if call.ended_reason == TerminationReason.SERVER_SHUTDOWN:
            self._close(session, CloseReason.FORCE_CLOSE)
        else:
            self._close(session, CloseReason.CALL_TERMINATED, detail)

    async def agent_left(self, call: SimCall) -> None:
        session = self._by_call.get(call.call_id)
        if session is not None:
            self._close(session, CloseReason.CALL_TERMINATED)

    async def agent_released(self, call: SimCall, agent: AgentMedia) -> None:
        session = self._by_call.get(call.call_id)
        if session is not None and session.open:
            self._unbind(session, "its media connection closed while it rang")

    # --- REST plane ------------------------------------------------------------------------------

    def list_sessions(
        self,
        connector_uuid: str,
        *,
        channel: str | None = None,
        remote_address: str | None = None,
        state: str | None = None,
    ) -> list[dict[str, Any]]:
        records = [
            s.record() for s in self.sessions.values() if s.call.connector_uuid == connector_uuid
        ]
        return [
            r
            for r in records
            if (channel is None or r["channel"] == channel)
            and (remote_address is None or r["remoteAddress"] == remote_address)
            and (state is None or r["state"] == state)
        ]

    async def close_session(self, connector_uuid: str, session_id: str) -> dict[str, Any] | str:
        """A REST close: the agent leaves the call as with ``call.close`` (a call still ringing
        ends). Returns the result, or the error code."""
        session = self.sessions.get(session_id)
        if session is None or session.call.connector_uuid != connector_uuid:
            return ErrorCode.SESSION_NOT_FOUND.value
        if not session.open:
            return ErrorCode.SESSION_CLOSED.value
        session.closing_reason = CloseReason.SDK_REQUEST
        call = session.call
        if call.state is CallState.CONNECTED and call.agent is not None:
            await call.remove_agent()  # caller and callee stay connected
        elif call.state is CallState.CONNECTED:
            self._close(session, CloseReason.SDK_REQUEST)
        else:
            await call.end(TerminationReason.AGENT_CLOSE.value)
        return {"closedAt": session.closed_at, "reason": CloseReason.SDK_REQUEST.value}

    # --- timers ----------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_S)
            now = anyio.current_time()
            for session in list(self.sessions.values()):
                deadline = session.deadline
                if deadline is None or now < deadline:
                    continue
                session.deadline = None
                if not session.open or session.has_media:
                    continue
                why = (
                    f"claimed but not readied within {self.claim_timeout:g} s"
                    if not session.readied
                    else f"no media connection within {self.media_timeout:g} s"
                )
                self._unbind(session, why)
            expired = [k for k, t in self._tokens.items() if now > t.expires]
            for key in expired:
                del self._tokens[key]
            if expired:
                self._changed()
            if self._ended and self.retention.max_age_s is not None:
                self._apply_retention(now)

    def token_count(self) -> int:
        """Media tokens issued and still valid (for tests of their purging)."""
        return len(self._tokens)

    # --- observation -----------------------------------------------------------------------------

    def sessions_of(self, connector_uuid: str) -> list[SimSession]:
        return [s for s in self.sessions.values() if s.call.connector_uuid == connector_uuid]
