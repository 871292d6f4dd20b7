"""A minimal, scriptable stand-in for the hosted Telcoflow service.

Written from ``shared/spec/hosted-1.0.0.md`` (what the official 1.0.0 client sends and expects)
and ``shared/spec/PROTOCOL.md`` alone, on anyio streams, h11 (HTTP requests, refusals and the REST
plane) and wsproto (WebSocket frames). It shares no code with the SDK's connection layer or its
sandbox, so a client that works against it speaks the hosted protocol as the official client's
notes describe it, not merely our own reading of it.

It does the least a hosted service does, and lets a test do the rest:

- every HTTP request (upgrades and REST, with their headers) and every frame a client sends is
  recorded; :meth:`HostedServer.wait_for` waits for a condition over them;
- the control plane (``/v1/agent/session-manager``) checks ``x-api-key``/``x-connector-uuid`` and
  answers ``setup``, ``session.open``, ``session.ready``, ``session.create`` and ``call_flow.setup``
  with top-level frames (a :class:`Session` may hold the claim's response for the test, or close
  instead of sending ``call.in``);
- the media plane (the ``url`` of ``call.in``) checks the bearer token and answers each ``command``
  with a ``command_response`` whose fields a test may override, omit (:data:`OMIT`) or withhold;
  grants, audio and call events are sent by the test;
- any frame can be sent verbatim, connections dropped, upgrades held or refused.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import h11
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

__all__ = [
    "CONNECTOR_NUMBER",
    "CONTROL_PATH",
    "OMIT",
    "ControlConnection",
    "HostedServer",
    "MediaConnection",
    "Request",
    "Session",
]

CONTROL_PATH = "/v1/agent/session-manager"
MEDIA_PREFIX = "/v1/agent/media/"
SESSIONS_PATH = "/public/v1/sessions"
#: The connector's own number: the callee of inbound calls, the caller of dialled ones.
CONNECTOR_NUMBER = "+6560000001"
#: The reason a call ends with when the agent leaves it by a command.
LEAVE_REASONS = {"call.close": "agent_close", "call.disconnect": "agent_disconnect"}

T = TypeVar("T")


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: As the value of a field override: leave the field out of the frame.
OMIT: Any = _Omit()


def shaped(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; a field whose value is :data:`OMIT` is left out."""
    return {k: v for k, v in {**base, **overrides}.items() if v is not OMIT}


def _json_object(message: str | bytes) -> dict[str, Any] | None:
    if not isinstance(message, str):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class Request:
    """One HTTP request a client made: a WebSocket upgrade or a REST call."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    status: int = 0  # what the server answered (101 for an accepted upgrade)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def is_upgrade(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"


@dataclass(eq=False)
class Session:
    """A TELCO session (a call) as the server keeps it."""

    id: str
    remote_address: str
    local_address: str
    from_number: str
    to_number: str
    initiator: Literal["CONNECTOR", "SDK"]
    call_id: str
    org_uuid: str
    token: str
    #: Path (and query) of the media URL that ``call.in`` names.
    media_target: str
    channel: str = "TELCO"
    created_at: int = field(default_factory=lambda: int(time.time()))
    #: The ``smWsId`` the session is bound to; any other string stands for another process.
    bound: str | None = None
    #: Leave the response to ``session.open`` to the test (``ControlConnection.respond``).
    hold_open: bool = False
    #: What ``session.ready`` makes the server do.
    on_ready: Literal["call.in", "closed", "nothing"] = "call.in"
    #: ``detail`` of the ``session.closed`` sent when ``on_ready`` is "closed".
    close_detail: str | None = None
    #: Per command name, overrides of its ``command_response`` fields; None: never answered.
    replies: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    opened_at: int | None = None
    closed_at: int | None = None
    media: MediaConnection | None = None


class WebSocket:
    """The server side of one accepted WebSocket: what the client sent, and ways to answer."""

    def __init__(
        self, server: HostedServer, stream: anyio.abc.ByteStream, request: Request, trailing: bytes
    ) -> None:
        self.server = server
        self.request = request
        #: Every data message the client sent, in order (``str`` for text, ``bytes`` for binary).
        self.received: list[str | bytes] = []
        #: The client's close code; 1006 when the connection ended without a close frame.
        self.close_code: int | None = None
        self.closed = anyio.Event()
        #: Pings the client sent, and pongs it sent (answers to :meth:`ping`).
        self.pings = 0
        self.pongs = 0
        #: Answer the client's pings (False: a server that has stopped responding).
        self.answer_pings = True
        self._stream = stream
        self._ws = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self._lock = anyio.Lock()
        self._text: list[str] = []
        self._bytes = bytearray()

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The JSON objects the client sent (only those of ``type`` ``kind`` if given)."""
        frames = (_json_object(m) for m in self.received)
        return [f for f in frames if f is not None and kind in (None, f.get("type"))]

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def send_json(self, frame: Any) -> None:
        await self.send_text(json.dumps(frame))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BytesMessage(data=data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake."""
        await self._send(CloseConnection(code=code, reason=reason))

    async def ping(self, payload: bytes = b"") -> None:
        await self._send(Ping(payload=payload))

    async def drop(self) -> None:
        """Close the TCP connection at once, without a close frame."""
        await self._stream.aclose()

    async def on_message(self, message: str | bytes) -> None:
        """Act on one data message (recorded already)."""

    async def _send(self, event: Event) -> None:
        async with self._lock:
            try:
                data = self._ws.send(event)
            except LocalProtocolError:
                return  # closing or closed: nothing more goes out
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async def serve(self) -> None:
        """Read until the connection ends."""
        try:
            while True:
                for event in self._ws.events():
                    message: str | bytes | None = None
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            message = "".join(self._text)
                            self._text.clear()
                    elif isinstance(event, BytesMessage):
                        self._bytes += event.data
                        if event.message_finished:
                            message = bytes(self._bytes)
                            self._bytes.clear()
                    elif isinstance(event, Ping):
                        self.pings += 1
                        self.server.changed()
                        if self.answer_pings:
                            await self._send(event.response())
                    elif isinstance(event, Pong):
                        self.pongs += 1
                        self.server.changed()
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        await self._send(event.response())  # unless we started the closing
                        return
                    if message is not None:
                        self.received.append(message)
                        self.server.changed()
                        await self.on_message(message)
                try:
                    data: bytes | None = await self._stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    data = None  # wsproto reports it as a close with code 1006
                self._ws.receive_data(data)
        finally:
            if self.close_code is None:
                self.close_code = 1006
            self.closed.set()
            self.server.changed()


class ControlConnection(WebSocket):
    """One session-manager connection."""

    def __init__(
        self,
        server: HostedServer,
        stream: anyio.abc.ByteStream,
        request: Request,
        trailing: bytes,
        sm_ws_id: str,
    ) -> None:
        super().__init__(server, stream, request, trailing)
        self.sm_ws_id = sm_ws_id

    async def respond(
        self,
        req_id: Any,
        *,
        ok: bool = True,
        content: Any = None,
        error_code: str | None = None,
        error_content: Any = None,
    ) -> None:
        """A ``response``, always with all six keys."""
        await self.send_json(
            {
                "type": "response",
                "reqId": req_id,
                "ok": ok,
                "content": content,
                "errorCode": error_code,
                "errorContent": error_content,
            }
        )

    async def call_in(self, session: Session, **overrides: Any) -> None:
        frame = {
            "type": "call.in",
            "sessionId": session.id,
            "callId": session.call_id,
            "orgUuid": session.org_uuid,
            "from": session.from_number,
            "to": session.to_number,
            "url": self.server.base_url + session.media_target,
            "token": session.token,
        }
        await self.send_json(shaped(frame, overrides))

    async def on_message(self, message: str | bytes) -> None:
        frame = _json_object(message)
        if frame is None:
            return
        kind, req_id = frame.get("type"), frame.get("reqId")
        session = self.server.sessions.get(str(frame.get("sessionId")))
        if kind == "setup":
            if self.server.setup_error is not None:
                code, text = self.server.setup_error
                await self.send_json({"type": "error", "code": code, "message": text})
                await self.close(1008, text)
            else:
                await self.send_json({"type": "setup.done", "smWsId": self.sm_ws_id})
                for session in self.server.resume_on_setup:  # at once, not 1 s later
                    await self.server.notify(session, activity="RESUME", to=self)
        elif kind == "session.open":
            await self._open(session, req_id)
        elif kind == "session.ready":
            if session is None or session.bound != self.sm_ws_id:
                return
            if session.on_ready == "call.in":
                await self.call_in(session)
            elif session.on_ready == "closed":
                await self.server.end_session(session, detail=session.close_detail)
        elif kind == "session.create" and self.server.dial_error is not None:
            await self.respond(req_id, ok=False, error_code=self.server.dial_error)
        elif kind == "session.create":
            session = self.server.new_session(
                remote_address=str(frame.get("remoteAddress")),
                outbound=True,
                **self.server.dial_options,
            )
            await self.respond(req_id, content={"sessionId": session.id, "created": True})
        elif kind == "call_flow.setup":
            await self.respond(req_id)

    async def _open(self, session: Session | None, req_id: Any) -> None:
        if session is None:
            await self.respond(req_id, ok=False, error_code="SESSION_NOT_FOUND")
        elif session.hold_open:
            return
        elif session.closed_at is not None:
            await self.respond(req_id, ok=False, error_code="SESSION_CLOSED")
        elif session.bound not in (None, self.sm_ws_id):
            busy = {"boundSmWsId": session.bound}
            await self.respond(req_id, ok=False, error_code="SESSION_BUSY", error_content=busy)
        else:
            session.bound = self.sm_ws_id
            session.opened_at = session.opened_at or int(time.time())
            content = {
                "session": {
                    "id": session.id,
                    "channel": session.channel,
                    "remoteAddress": session.remote_address,
                    "localAddress": session.local_address,
                    "openedAt": session.opened_at,
                }
            }
            await self.respond(req_id, content=content)


class MediaConnection(WebSocket):
    """One call's media connection."""

    def __init__(
        self,
        server: HostedServer,
        stream: anyio.abc.ByteStream,
        request: Request,
        trailing: bytes,
        session: Session,
    ) -> None:
        super().__init__(server, stream, request, trailing)
        self.session = session

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The ``data`` of every ``command`` frame, in order."""
        return [m["data"] for m in self.messages("command") if isinstance(m.get("data"), dict)]

    @property
    def audio_frames(self) -> list[bytes]:
        """Every binary frame the client sent, channel byte included."""
        return [m for m in self.received if isinstance(m, bytes)]

    @property
    def audio(self) -> bytes:
        """The PCM the agent sent on channel 0."""
        return b"".join(f[1:] for f in self.audio_frames if f[:1] == b"\x00")

    async def grant(self, requested_bytes: Any, *, prefer: Any, channel: Any = 0) -> None:
        """A ``buffer_request``; ``prefer=OMIT`` leaves ``prefer_audio_frame_bytes`` out."""
        data = {
            "requested_bytes": requested_bytes,
            "prefer_audio_frame_bytes": prefer,
            "channelId": channel,
        }
        await self.send_json({"type": "buffer_request", "data": shaped(data, {})})

    async def send_audio(self, pcm: bytes, channel: int = 0) -> None:
        await self.send_bytes(bytes([channel]) + pcm)

    async def call_event(self, event: str, **fields: Any) -> None:
        await self.send_json({"type": "call_event", "data": shaped({"event": event}, fields)})

    async def terminate(self, reason: Any = "caller_hangup") -> None:
        """The call is over: ``call.terminated`` (``reason=OMIT``: without a reason), a close
        with 1000, and ``session.closed`` on the control plane."""
        await self.call_event("call.terminated", reason=reason)
        await self.close(1000)
        await self.server.end_session(self.session)

    async def on_message(self, message: str | bytes) -> None:
        frame = _json_object(message)
        data = frame.get("data") if frame is not None and frame.get("type") == "command" else None
        if not isinstance(data, dict):
            return
        name = data.get("command")
        overrides = self.session.replies.get(str(name), {})
        if overrides is None:
            return  # withheld: the test answers, or nobody does
        reply = {
            "command_id": data.get("command_id"),
            "success": True,
            "result": None,
            "error_code": None,
            "error_message": None,
        }
        reply = shaped(reply, overrides)
        await self.send_json({"type": "command_response", "data": reply})
        if reply.get("success") and name in LEAVE_REASONS:
            await self.terminate(LEAVE_REASONS[str(name)])


async def _read_request(stream: anyio.abc.ByteStream, http: h11.Connection) -> Request | None:
    """The request's head and (empty) body; None if the client went away first."""
    request: Request | None = None
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            try:
                http.receive_data(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
        elif isinstance(event, h11.Request):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            request = Request(event.method.decode(), event.target.decode("latin-1"), headers)
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _reply(
    stream: anyio.abc.ByteStream,
    http: h11.Connection,
    request: Request,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    request.status = status
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    data = http.send(h11.Response(status_code=status, headers=headers)) or b""
    data += http.send(h11.Data(data=body)) or b""
    data += http.send(h11.EndOfMessage()) or b""
    await stream.send(data)


def _accept(http: h11.Connection, request: Request) -> tuple[bytes, bytes]:
    """The 101 answer to an upgrade, and the bytes the client sent after its request."""
    key = request.headers.get("sec-websocket-key", "").encode("latin-1")
    head = http.send(
        h11.InformationalResponse(
            status_code=101,
            headers=[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", generate_accept_token(key).decode("ascii")),
            ],
        )
    )
    request.status = 101
    return head or b"", http.trailing_data[0]


class HostedServer:
    """``async with HostedServer() as server:`` serves on ``server.base_url`` (loopback) inside
    the caller's event loop until the block ends."""

    def __init__(self, *, api_key: str = "test-key", connector_uuid: str = "test-uuid") -> None:
        self.api_key = api_key
        self.connector_uuid = connector_uuid
        self.org_uuid = str(uuid.uuid4())
        self.port = 0
        #: Every HTTP request, in order of arrival.
        self.requests: list[Request] = []
        self.controls: list[ControlConnection] = []
        self.medias: list[MediaConnection] = []
        self.sessions: dict[str, Session] = {}
        #: Refuse every control upgrade with this status and plain-text body.
        self.refuse_control: tuple[int, str] | None = None
        #: While set to an unset event, control upgrades wait for it before being answered.
        self.control_gate: anyio.Event | None = None
        #: Answer ``setup`` with ``error {code, message}`` and a close 1008 (PROTOCOL.md, ours).
        self.setup_error: tuple[str, str] | None = None
        #: Sessions notified (``RESUME``) to each connection right after its ``setup.done``.
        self.resume_on_setup: list[Session] = []
        #: Options (of :meth:`new_session`) of the sessions ``session.create`` makes.
        self.dial_options: dict[str, Any] = {}
        #: Refuse every ``session.create`` with this ``errorCode``.
        self.dial_error: str | None = None
        self._changed = anyio.Event()
        self._stack = AsyncExitStack()

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HostedServer:
        stack = self._stack
        listener = await stack.enter_async_context(
            await anyio.create_tcp_listener(local_host="127.0.0.1")
        )
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tg.cancel_scope.cancel()
        await self._stack.__aexit__(t, e, tb)

    # --- scripting -------------------------------------------------------------------------------

    def changed(self) -> None:
        """Wake every :meth:`wait_for`."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy and return it; ``TimeoutError`` after
        ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result

    def upgrades(self, path: str = CONTROL_PATH) -> list[Request]:
        """The upgrade requests made to ``path`` (refused ones included)."""
        return [r for r in self.requests if r.is_upgrade and r.path == path]

    def live_controls(self) -> list[ControlConnection]:
        """Control connections that are open and set up."""
        return [c for c in self.controls if not c.closed.is_set() and c.messages("setup")]

    async def control(self, index: int = 0) -> ControlConnection:
        """The ``index``-th control connection, once its client has sent ``setup``."""

        def ready() -> ControlConnection | None:
            conn = self.controls[index] if len(self.controls) > index else None
            return conn if conn is not None and conn.messages("setup") else None

        return await self.wait_for(ready)

    async def media(self, session: Session) -> MediaConnection:
        return await self.wait_for(lambda: session.media)

    def new_session(
        self,
        *,
        remote_address: str = "+6591234567",
        outbound: bool = False,
        call_id: str | None = None,
        token: str | None = None,
        media_target: str | None = None,
        **options: Any,
    ) -> Session:
        """A ringing inbound call from ``remote_address`` (or, ``outbound``, a call to it)."""
        call_id = call_id or f"call-{uuid.uuid4().hex[:12]}"
        ends = (
            (CONNECTOR_NUMBER, remote_address) if outbound else (remote_address, CONNECTOR_NUMBER)
        )
        session = Session(
            id=str(uuid.uuid4()),
            remote_address=remote_address,
            local_address=CONNECTOR_NUMBER,
            from_number=ends[0],
            to_number=ends[1],
            initiator="SDK" if outbound else "CONNECTOR",
            call_id=call_id,
            org_uuid=self.org_uuid,
            token=token or secrets.token_urlsafe(24),
            media_target=media_target or MEDIA_PREFIX + call_id,
            **options,
        )
        self.sessions[session.id] = session
        self.changed()
        return session

    async def notify(
        self,
        session: Session,
        *,
        activity: str = "NEW_INCOMING_CALL",
        to: ControlConnection | None = None,
        **overrides: Any,
    ) -> Session:
        """``session.notify`` to every live control connection (or only ``to``)."""
        frame = {
            "type": "session.notify",
            "sessionId": session.id,
            "channel": session.channel,
            "remoteAddress": session.remote_address,
            "localAddress": session.local_address,
            "activity": activity,
            "createdAt": session.created_at,
        }
        for conn in [to] if to is not None else self.live_controls():
            await conn.send_json(shaped(frame, overrides))
        return session

    async def end_session(
        self, session: Session, reason: str = "CALL_TERMINATED", detail: str | None = None
    ) -> None:
        """Close ``session``: ``session.closed`` to its connection (to every one while unbound)."""
        if session.closed_at is not None:
            return
        session.closed_at = int(time.time())
        self.changed()
        frame = shaped(
            {"type": "session.closed", "sessionId": session.id, "reason": reason},
            {"detail": detail if detail is not None else OMIT},
        )
        for conn in self.live_controls():
            if session.bound in (None, conn.sm_ws_id):
                await conn.send_json(frame)

    # --- serving ---------------------------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            http = h11.Connection(h11.SERVER)
            try:
                request = await _read_request(stream, http)
                if request is None:
                    return
                self.requests.append(request)
                self.changed()
                if request.is_upgrade and request.path == CONTROL_PATH:
                    await self._serve_control(stream, http, request)
                elif request.is_upgrade and request.path.startswith(MEDIA_PREFIX):
                    await self._serve_media(stream, http, request)
                elif not request.is_upgrade and request.path.startswith(SESSIONS_PATH):
                    await self._serve_rest(stream, http, request)
                else:
                    await _reply(stream, http, request, 404, b"no such endpoint")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
                return

    def _authorized(self, request: Request) -> bool:
        h = request.headers
        return h.get("x-api-key") == self.api_key and h.get("x-connector-uuid") == (
            self.connector_uuid
        )

    async def _serve_control(
        self, stream: anyio.abc.ByteStream, http: h11.Connection, request: Request
    ) -> None:
        if self.control_gate is not None:
            await self.control_gate.wait()
        if self.refuse_control is not None:
            status, body = self.refuse_control
            await _reply(stream, http, request, status, body.encode())
            return
        if not self._authorized(request):
            await _reply(stream, http, request, 401, b"invalid API key or connector")
            return
        head, trailing = _accept(http, request)
        conn = ControlConnection(self, stream, request, trailing, f"sm-{len(self.controls) + 1}")
        self.controls.append(conn)
        self.changed()
        await stream.send(head)
        try:
            await conn.serve()
        finally:
            # A lost control connection unbinds its sessions (PROTOCOL.md, reconnection).
            for session in self.sessions.values():
                if session.bound == conn.sm_ws_id:
                    session.bound = None

    async def _serve_media(
        self, stream: anyio.abc.ByteStream, http: h11.Connection, request: Request
    ) -> None:
        session = next(
            (s for s in self.sessions.values() if s.media_target == request.target), None
        )
        if session is None:
            await _reply(stream, http, request, 404, b"no such call")
        elif request.headers.get("authorization") != f"Bearer {session.token}":
            await _reply(stream, http, request, 401, b"invalid or expired token")
        elif session.closed_at is not None:
            await _reply(stream, http, request, 410, b"the call has ended")
        else:
            head, trailing = _accept(http, request)
            conn = MediaConnection(self, stream, request, trailing, session)
            session.media = conn
            self.medias.append(conn)
            self.changed()
            await stream.send(head)
            await conn.serve()

    async def _serve_rest(
        self, stream: anyio.abc.ByteStream, http: h11.Connection, request: Request
    ) -> None:
        def error(code: str, message: str) -> bytes:
            return json.dumps({"code": code, "message": message}).encode()

        ctype = "application/json"
        if not self._authorized(request):
            body = error("UNAUTHORIZED", "invalid API key or connector")
            await _reply(stream, http, request, 401, body, ctype)
            return
        path, query = request.path, parse_qs(urlsplit(request.target).query)
        if request.method == "GET" and path == SESSIONS_PATH:
            items = [
                {
                    "id": s.id,
                    "channel": s.channel,
                    "initiator": s.initiator,
                    "state": "OPEN" if s.closed_at is None else "CLOSED",
                    "remoteAddress": s.remote_address,
                    "localAddress": s.local_address,
                    "openedAt": s.opened_at or s.created_at,
                    "closedAt": s.closed_at,
                }
                for s in self.sessions.values()
            ]
            for key, name in (("channel", "channel"), ("remoteAddress", "remoteAddress")):
                if key in query:
                    items = [i for i in items if i[name] == query[key][0]]
            if "state" in query:
                items = [i for i in items if i["state"] == query["state"][0]]
            body = json.dumps({"items": items}).encode()
            await _reply(stream, http, request, 200, body, ctype)
            return
        parts = path.removeprefix(SESSIONS_PATH + "/").split("/")
        session = self.sessions.get(parts[0])
        if request.method == "POST" and len(parts) == 2 and parts[1] == "close":
            if session is None or session.closed_at is not None:
                body = error("SESSION_NOT_FOUND", "no such open session")
                await _reply(stream, http, request, 404, body, ctype)
                return
            await self.end_session(session, reason="SDK_REQUEST")
            if session.media is not None:  # for a call, the agent leaves it as with call.close
                await session.media.terminate(LEAVE_REASONS["call.close"])
            body = json.dumps({"closedAt": session.closed_at, "reason": "SDK_REQUEST"}).encode()
            await _reply(stream, http, request, 200, body, ctype)
            return
        await _reply(stream, http, request, 404, error("NOT_FOUND", "no such endpoint"), ctype)
