"""``Sandbox``: a local Telcoflow server (control and media WebSockets plus the HTTP API).

One TCP listener (optionally TLS, optionally asking for client certificates) serves all three:
the first request on a connection is either a WebSocket upgrade (control or media) or the start
of plain HTTP/1.1 keep-alive traffic to the API.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import tempfile
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import attrs
import h11
from anyio.streams.tls import TLSAttribute, TLSListener

from .._core import (
    AudioMode,
    CallIncoming,
    CallState,
    CommandRequest,
    ControlProtocol,
    ErrorMessage,
    ProtocolError,
    Role,
    Setup,
    SetupDone,
)
from .._net import (
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
    open_listener,
)
from ._call import MediaClock, SimCall
from ._faults import CommandFault, Fault, parse_fault
from ._http import HttpApi, read_body, send_response
from ._sessions import AgentMedia, ControlSession
from ._spec import CallSpec

__all__ = ["Connector", "Sandbox"]

logger = logging.getLogger("telcoflow.sandbox")

#: A media token is good for one connection, for this long after its offer (PROTOCOL.md).
TOKEN_TTL_S = 30.0
#: A client must send ``setup`` this soon after its control connection opens.
SETUP_TIMEOUT_S = 10.0
#: The server pings its peers this often and drops those that do not answer in time.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 10.0

DEFAULT_API_KEY = "sandbox-api-key"
DEFAULT_CONNECTOR_UUID = "00000000-0000-4000-8000-000000000001"


class _QuietTLSListener(TLSListener):
    """A refused TLS client (untrusted certificate, plain TCP) is routine for a test server:
    log it in one line, not with a traceback at ERROR as anyio's default does."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        logger.info("sandbox: TLS handshake failed: %s", exc)


@attrs.frozen
class Connector:
    """An (API key, connector uuid) pair the sandbox accepts."""

    api_key: str = attrs.field(repr=False)
    connector_uuid: str


@attrs.define
class _Token:
    call_id: str
    expires: float
    session: ControlSession


class Sandbox:
    """A local Telcoflow server. ``async with Sandbox() as sb:`` then point a client at
    ``sb.base_url`` with ``sb.api_key`` and ``sb.connector_uuid``.

    ``tls=True`` serves ``wss://`` with a CA generated on start (``sb.ca_path``) and accepts client
    certificates issued by it (``sb.client_cert_path``/``sb.client_key_path``, identifying the
    default connector) for production-mode (mutual TLS) clients. ``record=False`` keeps no
    recordings (long or many calls).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool = False,
        connectors: list[Connector] | None = None,
        record: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.record = record
        self.connectors = connectors or [Connector(DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID)]
        self._calls: dict[str, SimCall] = {}
        self._controls: dict[str, list[ControlSession]] = {
            c.connector_uuid: [] for c in self.connectors
        }
        self._round_robin: dict[str, int] = {}
        self._tokens: dict[str, _Token] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._clock = MediaClock()
        self._listener: anyio.abc.Listener[Any] | None = None
        self._changed = anyio.Event()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._api = HttpApi(self)
        self._command_faults: list[CommandFault] = []
        self._refuse_until = 0.0
        self._refuse_status = 503
        #: Faults injected so far, by kind (for reports).
        self.faults_injected: dict[str, int] = {}
        self.ca_path: str | None = None
        self.client_cert_path: str | None = None
        self.client_key_path: str | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The default connector's API key."""
        return self.connectors[0].api_key

    @property
    def connector_uuid(self) -> str:
        """The default connector's uuid."""
        return self.connectors[0].connector_uuid

    @property
    def base_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS): the client's ``base_url``."""
        return f"{'wss' if self.tls else 'ws'}://{self._authority()}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS): the HTTP API's root."""
        return f"{'https' if self.tls else 'http'}://{self._authority()}"

    def _authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def __aenter__(self) -> Sandbox:
        listener = await open_listener(self.host, self.port)
        if self.port == 0:
            sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
            self.port = int(sockname[1])
        if self.tls:
            listener = _QuietTLSListener(
                listener, self._server_ssl_context(), standard_compatible=False
            )
        self._listener = listener
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._serve, listener)
        tg.start_soon(self._clock.run)
        logger.info("sandbox listening on %s", self.base_url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End every call (``server_shutdown``), close every connection, stop serving."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as ending:
                for call in list(self._calls.values()):
                    ending.start_soon(call.end, "server_shutdown")
            for sessions in self._controls.values():
                for session in list(sessions):
                    session.alive = False
                    await session.conn.aclose(1001, "server shutdown")
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if self._listener is not None:
                    await self._listener.aclose()
            if self._tmp is not None:
                self._tmp.cleanup()

    def _server_ssl_context(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA(organization_name="telcoflow sandbox")
        server = ca.issue_cert("127.0.0.1", "localhost", "::1")
        client = ca.issue_cert(
            f"{self.connector_uuid}.connectors.sandbox.invalid", common_name=self.connector_uuid
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="telcoflow-sandbox-")
        self.ca_path = os.path.join(self._tmp.name, "ca.pem")
        self.client_cert_path = os.path.join(self._tmp.name, "client-cert.pem")
        self.client_key_path = os.path.join(self._tmp.name, "client-key.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        client.cert_chain_pems[0].write_to_path(self.client_cert_path)
        client.private_key_pem.write_to_path(self.client_key_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(context)
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL  # API-key clients need no certificate
        return context

    async def _serve(self, listener: anyio.abc.Listener[Any]) -> None:
        async with anyio.create_task_group() as tg:
            await listener.serve(self._handle_connection, tg)

    # --- observation -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever connections or calls change."""
        while not predicate():
            await self._changed.wait()

    def control_sessions(self, connector_uuid: str | None = None) -> list[ControlSession]:
        """The live control connections of a connector (the default one if not given)."""
        return [s for s in self._controls[connector_uuid or self.connector_uuid] if s.alive]

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "connectors": [
                {"api_key": c.api_key, "connector_uuid": c.connector_uuid} for c in self.connectors
            ],
        }

    @property
    def calls(self) -> list[SimCall]:
        """Every call placed on this sandbox, ended ones included."""
        return list(self._calls.values())

    def get_call(self, call_id: str) -> SimCall | None:
        return self._calls.get(call_id)

    # --- calls -----------------------------------------------------------------------------------

    async def create_call(self, spec: CallSpec | None = None, **fields: Any) -> SimCall:
        """Place a simulated inbound call; offered at once to a connected client, or as soon as
        one connects. ``fields`` are :class:`CallSpec` fields, for brevity."""
        if self._tg is None:
            raise RuntimeError("the sandbox is not running")
        spec = spec or CallSpec(**fields)
        connector = spec.connector_uuid or self.connector_uuid
        if connector not in self._controls:
            raise ValueError(f"unknown connector_uuid {connector!r}")
        call = SimCall(self, f"call-{uuid.uuid4().hex[:16]}", spec, connector, self.record)
        self._calls[call.call_id] = call
        self._tg.start_soon(call.run, self._clock)
        logger.info("call %s placed (%s -> %s)", call.call_id, spec.from_number, spec.to_number)
        await self.offer(call)
        self._notify()
        return call

    async def offer(self, call: SimCall, exclude: ControlSession | None = None) -> None:
        """Offer ``call`` to the next control connection of its connector (round robin),
        another than ``exclude`` where there is one. Without any, the call keeps ringing."""
        if call.state is not CallState.PENDING or call.agent is not None:
            return
        sessions = self.control_sessions(call.connector_uuid)
        if exclude is not None and len(sessions) > 1:
            sessions = [s for s in sessions if s is not exclude]
        if not sessions:
            call.offered_to = None
            return
        i = self._round_robin.get(call.connector_uuid, 0)
        self._round_robin[call.connector_uuid] = i + 1
        session = sessions[i % len(sessions)]
        call.set_format(session.sample_rate)
        token = secrets.token_urlsafe(24)
        now = anyio.current_time()
        self._tokens[token] = _Token(call.call_id, now + TOKEN_TTL_S, session)
        call.offered_to = session
        call.offer_deadline = now + 10.0
        call.offers += 1
        offer = CallIncoming(
            call_id=call.call_id,
            from_number=call.spec.from_number,
            to_number=call.spec.to_number,
            direction="MT",
            media_url=f"{session.media_base}/v1/agent/media/{call.call_id}",
            media_token=token,
            created_at=call.created_at,
        )
        if not await session.send(offer):
            await self._session_gone(session)

    def revoke_tokens(self, call_id: str) -> None:
        for token in [t for t, v in self._tokens.items() if v.call_id == call_id]:
            del self._tokens[token]

    async def respond(
        self,
        call: SimCall,
        agent: AgentMedia,
        req: CommandRequest,
        success: bool,
        code: str | None,
        message: str | None,
        delay: float = 0.0,
    ) -> None:
        """Send a command's response, now or (a ``delay_command`` fault) after ``delay``."""
        if delay <= 0:
            await agent.respond(req.command_id, success, code, message)
            return

        async def later() -> None:
            await anyio.sleep(delay)
            await agent.respond(req.command_id, success, code, message)

        assert self._tg is not None
        self._tg.start_soon(later)

    def take_command_fault(self, call_id: str, command: str) -> CommandFault | None:
        """The first pending command fault matching this command, removed; or None."""
        for i, fault in enumerate(self._command_faults):
            if fault.matches(call_id, command):
                return self._command_faults.pop(i)
        return None

    # --- faults ----------------------------------------------------------------------------------

    async def inject_fault(self, body: Any) -> dict[str, Any]:
        """Apply a fault (``POST /sandbox/faults``; see SANDBOX.md). ``body`` is its JSON or a
        :class:`Fault`. Raises ``ValueError`` for a bad request or a missing target."""
        fault = body if isinstance(body, Fault) else parse_fault(body)
        result = await self._apply(fault)
        self.faults_injected[fault.kind] = self.faults_injected.get(fault.kind, 0) + 1
        logger.info("fault injected: %s %s", fault.kind, result)
        return {"kind": fault.kind, **result}

    def _matching_sessions(self, fault: Fault) -> list[ControlSession]:
        connector = fault.connector_uuid or self.connector_uuid
        if connector not in self._controls:
            raise ValueError(f"unknown connector_uuid {connector!r}")
        sessions = self.control_sessions(connector)
        if fault.connection_id is not None:
            sessions = [s for s in sessions if s.connection_id == fault.connection_id]
        if not sessions:
            raise ValueError("no matching control connection")
        return sessions

    def _media_of(self, call_id: str | None) -> AgentMedia:
        call = self._calls.get(call_id or "")
        if call is None:
            raise ValueError(f"no call {call_id!r}")
        if call.agent is None:
            raise ValueError(f"call {call_id} has no media connection")
        return call.agent

    async def _apply(self, fault: Fault) -> dict[str, Any]:
        if fault.kind == "drop_control":
            sessions = self._matching_sessions(fault)
            for session in sessions:
                await session.conn.abort()
                await self._session_gone(session)
            return {"dropped": [s.connection_id for s in sessions]}
        if fault.kind == "drop_media":
            agent = self._media_of(fault.call_id)
            agent.lost = True
            await agent.conn.abort()
            return {"dropped": [fault.call_id]}
        if fault.kind in ("delay_command", "fail_command"):
            kind = "delay" if fault.kind == "delay_command" else "fail"
            self._command_faults.append(
                CommandFault(kind, fault.seconds, fault.error_code, fault.call_id, fault.command)
            )
            return {"armed": kind}
        if fault.kind == "malformed_frame":
            if fault.target == "media":
                conns = [self._media_of(fault.call_id).conn]
            else:
                conns = [s.conn for s in self._matching_sessions(fault)]
            for conn in conns:
                try:
                    await conn.send(fault.payload)
                except ConnectionClosed:
                    pass
            return {"sent": len(conns)}
        assert fault.kind == "refuse_connections"
        self._refuse_until = anyio.current_time() + fault.seconds
        self._refuse_status = fault.status
        return {"seconds": fault.seconds, "status": fault.status}

    # --- connections -----------------------------------------------------------------------------

    async def _handle_connection(self, stream: anyio.abc.ByteStream) -> None:
        try:
            await self._dispatch(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            pass
        except (ConnectFailed, h11.RemoteProtocolError) as exc:
            logger.debug("sandbox: bad request: %s", exc)
        except Exception:
            logger.exception("sandbox: connection handler failed")
        finally:
            # Not forcefully: a response just sent may still be on its way out (the close waits
            # for it, bounded), and a client reading slowly must get all of it.
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _dispatch(self, stream: anyio.abc.ByteStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        raw = bytearray()
        first = True
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    return
                if first:
                    raw += data
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                if first and headers.get("upgrade", "").lower() == "websocket":
                    handshake = await ServerHandshake.start(stream, bytes(raw))
                    await self._websocket(stream, handshake)
                    return
                first = False
                body = await read_body(conn, stream)
                if body is None:
                    return
                response = await self._api.handle(
                    event.method.decode(), event.target.decode("latin-1"), body
                )
                await send_response(conn, stream, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:
                return

    async def _websocket(self, stream: anyio.abc.ByteStream, handshake: ServerHandshake) -> None:
        if anyio.current_time() < self._refuse_until:
            await handshake.reject(self._refuse_status, "connections refused (injected fault)")
            return
        target = handshake.request.target.split("?", 1)[0]
        if target == "/v1/agent/control":
            await self._control(stream, handshake)
        elif target.startswith("/v1/agent/media/"):
            await self._media(handshake, target.removeprefix("/v1/agent/media/"))
        else:
            await handshake.reject(404, f"no WebSocket endpoint at {target}")

    def _authenticate(self, stream: anyio.abc.ByteStream, headers: dict[str, str]) -> str | None:
        """The connector a control connection belongs to, or None (refused)."""
        key, connector = headers.get("x-api-key"), headers.get("x-connector-uuid")
        if key is not None or connector is not None:
            for c in self.connectors:
                if secrets.compare_digest(c.api_key, key or "") and c.connector_uuid == connector:
                    return c.connector_uuid
            return None
        cert: dict[str, Any] | None = stream.extra(TLSAttribute.peer_certificate, None)
        if cert:
            rdns: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())
            for rdn in rdns:
                for name, value in rdn:
                    if name == "commonName" and value in self._controls:
                        return str(value)
        return None

    async def _control(self, stream: anyio.abc.ByteStream, handshake: ServerHandshake) -> None:
        connector = self._authenticate(stream, handshake.headers)
        if connector is None:
            await handshake.reject(401, "invalid or missing credentials")
            return
        conn = await handshake.accept("sandbox control")
        proto = ControlProtocol(Role.SERVER)
        try:
            setup = await self._receive_setup(conn, proto)
        except ConnectionClosed:
            return
        if isinstance(setup, str):
            try:
                await conn.send(proto.send(ErrorMessage("INVALID_SETUP", setup)))
            except (ConnectionClosed, ProtocolError):
                pass
            await conn.aclose(1008, "invalid setup")
            return
        scheme = "wss" if self.tls else "ws"
        session = ControlSession(
            conn,
            proto,
            connector_uuid=connector,
            connection_id=f"conn-{uuid.uuid4().hex[:12]}",
            sample_rate=setup.sample_rate,
            audio_mode=AudioMode(setup.audio_mode),
            media_base=f"{scheme}://{handshake.headers.get('host', self._authority())}",
        )
        # Ready (and visible to offers) in the same step as setup.done is queued: offers can
        # only follow it on the wire, and a client that saw setup.done finds its session here.
        ready = proto.send(SetupDone(session.connection_id))
        self._controls[connector].append(session)
        logger.info("control connection %s (%s) ready", session.connection_id, connector)
        self._notify()
        try:
            await conn.send(ready)
        except ConnectionClosed:
            await self._session_gone(session)
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._offer_waiting, session)
                tg.start_soon(self._heartbeat, conn)
                await self._read_control(session)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._session_gone(session)

    @staticmethod
    async def _receive_setup(conn: WebSocketConnection, proto: ControlProtocol) -> Setup | str:
        """The client's setup frame, or why there is none."""
        try:
            with anyio.fail_after(SETUP_TIMEOUT_S):
                setup = proto.receive(await conn.receive())
        except TimeoutError:
            return f"no setup within {SETUP_TIMEOUT_S:g} s"
        except ProtocolError as exc:
            return str(exc)
        if not isinstance(setup, Setup):
            return "the first frame must be setup"
        return setup

    async def _heartbeat(self, conn: WebSocketConnection) -> None:
        try:
            await conn.heartbeat(PING_INTERVAL_S, PING_TIMEOUT_S)
        except ConnectionClosed:
            pass

    async def _offer_waiting(self, session: ControlSession) -> None:
        """A connection is ready: offer it every ringing call that nobody holds."""
        for call in list(self._calls.values()):
            if (
                call.connector_uuid == session.connector_uuid
                and call.state is CallState.PENDING
                and call.agent is None
                and (call.offered_to is None or not call.offered_to.alive)
            ):
                await self.offer(call)

    async def _read_control(self, session: ControlSession) -> None:
        while True:
            try:
                raw = await session.conn.receive()
            except ConnectionClosed:
                return
            try:
                msg = session.proto.receive(raw)
            except ProtocolError as exc:
                logger.info("control %s: ignoring bad frame: %s", session.connection_id, exc)
                continue
            logger.debug("control %s: ignoring %r", session.connection_id, msg)

    async def _session_gone(self, session: ControlSession) -> None:
        session.alive = False
        sessions = self._controls[session.connector_uuid]
        if session in sessions:
            sessions.remove(session)
            logger.info("control connection %s closed", session.connection_id)
            await session.conn.aclose()
            for call in list(self._calls.values()):
                if call.offered_to is session and call.agent is None:
                    call.offered_to = None
                    await self.offer(call)
            self._notify()

    async def _media(self, handshake: ServerHandshake, call_id: str) -> None:
        auth = handshake.headers.get("authorization", "")
        token = self._tokens.pop(auth.removeprefix("Bearer ").strip(), None)
        if token is None or token.call_id != call_id or anyio.current_time() > token.expires:
            await handshake.reject(401, "invalid or expired media token")
            return
        call = self._calls.get(call_id)
        if call is None or call.state is CallState.DISCONNECTED:
            await handshake.reject(410, "the call has ended")
            return
        if call.agent is not None:
            await handshake.reject(409, "the call is already claimed")
            return
        conn = await handshake.accept(f"sandbox media {call_id}")
        call.set_format(token.session.sample_rate)
        agent = AgentMedia(call, conn, token.session)
        call.attach(agent)
        self._notify()
        logger.info("call %s claimed by %s", call_id, token.session.connection_id)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat, conn)
                await agent.start()
                await agent.serve()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await call.agent_gone(agent)
                await conn.aclose()
                self._notify()
