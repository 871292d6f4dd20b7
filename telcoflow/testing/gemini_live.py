"""A local Gemini Live server (the Developer API's wire dialect) driven by a scripted model.

``async with GeminiLiveStandIn() as s:`` serves TLS on 127.0.0.1 (the google-genai client
forces ``wss`` whenever an API key is set) with a CA made for this stand-in; point the real
client at it with ``s.client()`` or ``genai.Client(api_key=s.api_key,
http_options=types.HttpOptions(base_url=s.base_url, async_client_args={"ssl":
s.client_ssl_context()}))``. Behind the wire is a
:class:`~telcoflow.testing._engine.ScriptedConversation`: caller speech is found by energy,
each answer is a tone of its own, so recordings show which answer was heard.

Invariants:

- every client message is recorded after its keys are normalised to camelCase (proto JSON
  accepts both spellings, and google-genai sends a mix), except inside opaque user data
  (function arguments, responses and JSON schemas), which is kept as sent;
- every server message has one camelCase top-level key, as ``_LiveServerMessage_from_mldev``
  requires;
- the reader never waits for the speaker: answer audio is paced by its own task, so caller
  audio, barge-in and tool responses are handled while an answer is being sent;
- an answer ends with ``generationComplete`` then ``turnComplete`` (held back until the
  estimated playback end, unless ``turn_complete="generation"``); caller speech during the
  answer or its playback estimate ends it with ``interrupted`` instead (then ``turnComplete``
  if it had not been sent), or with ``toolCallCancellation`` while its tool call is pending;
- a session resumed with a handle this stand-in issued continues the same conversation (the
  script position and turn count carry on); an unknown handle is refused with close 1008.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener

from .._net import (
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
    open_listener,
)
from .._net._serving import Serving, close_listener
from ._engine import (
    DEFAULT_SCRIPT,
    END_OF_TURN_S,
    SPEECH_RMS,
    Answer,
    Response,
    ScriptedConversation,
)
from ._gemini_wire import (
    API_PATH,
    POLICY_CLOSE,
    GeminiSetup,
    camelize,
    decode_base64,
    duration,
    mime_rate,
    parse_target,
    read_setup,
)

if TYPE_CHECKING:
    from google import genai

__all__ = [
    "API_PATH",
    "GeminiConnection",
    "GeminiLiveStandIn",
    "GeminiSetup",
    "camelize",
    "decode_base64",
    "mime_rate",
    "parse_target",
    "read_setup",
]

logger = logging.getLogger("telcoflow.testing.gemini_live")

_STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


# --- records -------------------------------------------------------------------------------------


@dataclass
class _Conversation:
    """One conversation, which outlives its connections when resumed."""

    id: int
    engine: ScriptedConversation
    latest_handle: str | None = None
    handles: int = 0
    tool_calls: int = 0


@dataclass
class GeminiConnection:
    """What one WebSocket connection to the stand-in carried, for assertions."""

    path: str
    api_version: str
    method: str
    #: Where the API key was found: ``"header"`` (``x-goog-api-key``), ``"query"``,
    #: ``"token"`` (``Authorization: Token``, ephemeral) or None.
    key_source: str | None
    headers: Mapping[str, str]
    setup: GeminiSetup | None = None
    session_id: str | None = None
    #: Every client message after the setup, camelCase.
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The rate declared by each ``realtime_input.audio`` message, in order.
    audio_rates: list[int] = field(default_factory=list)
    audio_bytes: int = 0
    texts: list[str] = field(default_factory=list)
    client_contents: list[dict[str, Any]] = field(default_factory=list)
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    #: ``"audioStreamEnd"``, ``"activityStart"``, ``"activityEnd"`` as they came.
    activity: list[str] = field(default_factory=list)
    #: Tool call ids answered that no pending call had.
    unmatched_tool_ids: list[str] = field(default_factory=list)
    cancelled_tool_ids: list[str] = field(default_factory=list)
    #: Messages the client sent that the stand-in did not understand.
    unknown: list[dict[str, Any]] = field(default_factory=list)
    #: The handle this connection resumed with, and whether it was the latest issued.
    resumed_handle: str | None = None
    handle_was_latest: bool | None = None
    handles_issued: list[str] = field(default_factory=list)
    #: Top-level key (and ``serverContent`` field) of every message sent, in order.
    sent: list[str] = field(default_factory=list)
    close_code: int | None = None
    closed: bool = False
    conversation_id: int | None = None

    @property
    def reseeded(self) -> bool:
        """Whether a resumed connection was sent ``client_content`` (history re-seeded), which
        Gemini 3.1 rejects with 1007 after the first model turn."""
        return self.resumed_handle is not None and bool(self.client_contents)


# --- the server ----------------------------------------------------------------------------------


class _QuietTLSListener(TLSListener):
    """A client that gives up during the TLS handshake is routine here: log one line."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        logger.info("gemini stand-in: TLS handshake failed: %s", exc)


class GeminiLiveStandIn(Serving):
    """A Gemini Live server on 127.0.0.1 over TLS, speaking the Developer API dialect.

    Knobs: ``script`` (the answers, in order), ``api_key`` (the one accepted), ``pace``
    (answer audio sent this many times faster than real time), ``chunk_ms``, ``out_rate``
    (declared in each chunk's mime type), ``turn_complete`` (``"playback"``: held back until
    the estimated playback end, as Gemini does; ``"generation"``: right after
    ``generationComplete``), ``setup_delay_s`` / ``drop_setup_complete`` (slow or silent
    setup), ``lifetime_s`` (per connection: then ``goAway{timeLeft: go_away_time_left_s}``
    and a close with ``go_away_close_code``), ``speech_rms`` / ``end_of_turn_s`` (the VAD).
    Fault methods act on the newest connection: :meth:`close_mid_turn`, :meth:`drop`,
    :meth:`go_away`, :meth:`send_raw`, :meth:`send_interrupted`.
    """

    def __init__(
        self,
        script: Sequence[Answer] = DEFAULT_SCRIPT,
        *,
        api_key: str = "standin-api-key",
        pace: float = 2.0,
        chunk_ms: int = 40,
        out_rate: int = 24000,
        turn_complete: Literal["playback", "generation"] = "playback",
        setup_delay_s: float = 0.0,
        drop_setup_complete: bool = False,
        lifetime_s: float | None = None,
        go_away_time_left_s: float = 1.0,
        go_away_close_code: int = 1000,
        speech_rms: float = SPEECH_RMS,
        end_of_turn_s: float = END_OF_TURN_S,
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        self.script = tuple(script)
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.out_rate = out_rate
        self.turn_complete = turn_complete
        self.setup_delay_s = setup_delay_s
        self.drop_setup_complete = drop_setup_complete
        self.lifetime_s = lifetime_s
        self.go_away_time_left_s = go_away_time_left_s
        self.go_away_close_code = go_away_close_code
        self.speech_rms = speech_rms
        self.end_of_turn_s = end_of_turn_s
        self.port = 0
        self.ca_path: str | None = None
        self.connections: list[GeminiConnection] = []
        self._sessions: list[_Session] = []
        self._handles: dict[str, _Conversation] = {}
        self._conversation_ids = itertools.count(1)
        self._close_mid_turn: tuple[int, int] | None = None
        self._changed = anyio.Event()
        self._ca: Any = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: the client's ``HttpOptions.base_url``."""
        return f"https://127.0.0.1:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this stand-in's CA (and nothing else)."""
        if self._ca is None:
            raise RuntimeError("the stand-in is not running")
        return ssl.create_default_context(cadata=self._ca.cert_pem.bytes().decode())

    def client(self, api_key: str | None = None) -> genai.Client:
        """A google-genai client pointed at this stand-in (needs ``google-genai``)."""
        from google import genai
        from google.genai import types

        return genai.Client(
            api_key=api_key or self.api_key,
            http_options=types.HttpOptions(
                base_url=self.base_url, async_client_args={"ssl": self.client_ssl_context()}
            ),
        )

    async def _start(self, stack: AsyncExitStack) -> None:
        import trustme

        self._ca = ca = trustme.CA(organization_name="telcoflow gemini stand-in")
        server = ca.issue_cert("127.0.0.1", "localhost")
        tmp = tempfile.TemporaryDirectory(prefix="telcoflow-gemini-")
        stack.callback(tmp.cleanup)
        self.ca_path = os.path.join(tmp.name, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(context)
        tcp = await open_listener("127.0.0.1", 0)
        self.port = int(tcp.extra(anyio.abc.SocketAttribute.local_address)[1])
        listener = _QuietTLSListener(tcp, context, standard_compatible=False)
        stack.push_async_callback(close_listener, listener)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(self._serve, listener)

    async def aclose(self) -> None:
        """Close every connection and stop serving."""
        await super().aclose()

    async def _serve(self, listener: anyio.abc.Listener[Any]) -> None:
        async with anyio.create_task_group() as tg:
            await listener.serve(self._handle, tg)

    # --- observation -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever anything is received or sent."""
        while not predicate():
            await self._changed.wait()

    @property
    def setups(self) -> list[GeminiSetup]:
        """The setup of every connection, oldest first."""
        return [c.setup for c in self.connections if c.setup is not None]

    @property
    def live(self) -> GeminiConnection | None:
        """The newest connection that is still open."""
        for session in reversed(self._sessions):
            if not session.record.closed:
                return session.record
        return None

    def conversation(self, connection: GeminiConnection) -> ScriptedConversation:
        """The scripted conversation behind ``connection`` (shared by its resumptions)."""
        for session in self._sessions:
            if session.record is connection:
                return session.conv.engine
        raise KeyError("not a connection of this stand-in")

    def sent_count(self, kind: str) -> int:
        """How many messages of ``kind`` (see :attr:`GeminiConnection.sent`) were sent."""
        return sum(c.sent.count(kind) for c in self.connections)

    # --- faults ----------------------------------------------------------------------------------

    def close_mid_turn(self, after_chunks: int = 3, code: int = 1011) -> None:
        """Arm a fault: the next answer's connection closes with ``code`` after
        ``after_chunks`` chunks of audio (once)."""
        self._close_mid_turn = (after_chunks, code)

    def _session(self) -> _Session:
        for session in reversed(self._sessions):
            if not session.record.closed:
                return session
        raise RuntimeError("no open connection")

    async def drop(self, code: int = 1011, reason: str = "Internal error encountered.") -> None:
        """Close the newest open connection now with ``code``."""
        await self._session().close(code, reason)

    async def go_away(
        self, time_left_s: float = 1.0, close_after_s: float | None = None, code: int = 1000
    ) -> None:
        """Send ``goAway{timeLeft}`` on the newest open connection, then close it with ``code``
        after ``close_after_s`` (``time_left_s`` if not given) unless the client closes first."""
        session = self._session()
        await session.send({"goAway": {"timeLeft": duration(time_left_s)}}, "goAway")
        delay = time_left_s if close_after_s is None else close_after_s
        session.start_soon(session.close_later, delay, code)

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as is on the newest open connection (a malformed or unknown message)."""
        await self._session().send_text(text, "raw")

    async def send_interrupted(self) -> None:
        """Send ``serverContent.interrupted`` with no answer under way."""
        await self._session().send({"serverContent": {"interrupted": True}}, "interrupted")

    # --- connections -----------------------------------------------------------------------------

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        try:
            handshake = await ServerHandshake.start(stream, b"")
            target = handshake.request.target
            parsed = parse_target(target)
            if parsed is None:
                await handshake.reject(404, f"no Live endpoint at {urlsplit(target).path}")
                return
            version, method, query = parsed
            key = handshake.headers.get("x-goog-api-key")
            source: str | None = "header" if key is not None else None
            if key is None and "key" in query:
                key, source = query["key"], "query"
            token = handshake.headers.get("authorization", "")
            if key is None and token.startswith("Token "):  # an ephemeral token (Constrained)
                key, source = token.removeprefix("Token "), "token"
            record = GeminiConnection(
                path=urlsplit(target).path,
                api_version=version,
                method=method,
                key_source=source,
                headers={
                    k: v
                    for k, v in handshake.headers.items()
                    if k not in ("x-goog-api-key", "authorization")
                },
            )
            conn = await handshake.accept("gemini stand-in")
        except (ConnectFailed, *_STREAM_ERRORS) as exc:
            logger.debug("gemini stand-in: bad upgrade: %s", exc)
            await anyio.aclose_forcefully(stream)
            return
        self.connections.append(record)
        session = _Session(self, conn, record, key_ok=key == self.api_key)
        self._sessions.append(session)
        self._notify()
        try:
            await session.run()
        finally:
            record.closed = True
            self._notify()
            with anyio.CancelScope(shield=True):
                await conn.aclose()

    def _conversation_for(self, handle: str | None) -> _Conversation | None:
        if handle is None:
            engine = ScriptedConversation(
                script=self.script,
                out_rate=self.out_rate,
                chunk_ms=self.chunk_ms,
                speech_rms=self.speech_rms,
                end_of_turn_s=self.end_of_turn_s,
            )
            return _Conversation(next(self._conversation_ids), engine)
        return self._handles.get(handle)

    def _issue_handle(self, conv: _Conversation) -> str:
        conv.handles += 1
        handle = f"resume-{conv.id}-{conv.handles}-{secrets.token_hex(4)}"
        conv.latest_handle = handle
        self._handles[handle] = conv
        return handle

    def _take_close_fault(self) -> tuple[int, int] | None:
        fault, self._close_mid_turn = self._close_mid_turn, None
        return fault


class _Session:
    """One connection's protocol: a reader (this task) and a speaker task per answer."""

    def __init__(
        self,
        standin: GeminiLiveStandIn,
        conn: WebSocketConnection,
        record: GeminiConnection,
        *,
        key_ok: bool,
    ) -> None:
        self.standin = standin
        self.conn = conn
        self.record = record
        self.key_ok = key_ok
        self.conv = _Conversation(0, ScriptedConversation())  # replaced at setup
        self._tg: anyio.abc.TaskGroup | None = None
        self._speaker: anyio.CancelScope | None = None
        #: The response whose turn is open (sent audio, no turnComplete yet).
        self._open: Response | None = None
        self._pending_tools: dict[str, str] = {}
        self._waiting: Response | None = None
        self._waiting_fault: tuple[int, int] | None = None
        self._tool_ids = itertools.count(1)
        self._prompt_bytes = 0

    # --- sending ---------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any], kind: str) -> None:
        await self.send_text(json.dumps(message), kind)

    async def send_text(self, text: str, kind: str) -> None:
        try:
            await self.conn.send(text)
        except ConnectionClosed:
            return
        self.record.sent.append(kind)
        self.standin._notify()

    async def close(self, code: int, reason: str = "") -> None:
        if self.conn.closed is not None:
            return  # the client closed first
        self.record.close_code = code
        if self._open is not None:
            self._open.interrupted = True  # lost with the connection
        await self.conn.aclose(code, reason)
        self.standin._notify()

    async def close_later(self, delay: float, code: int) -> None:
        await anyio.sleep(delay)
        await self.close(code, "session lifetime reached")

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    # --- the connection --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            first = await self.conn.receive()
        except ConnectionClosed as exc:
            self.record.close_code = self.record.close_code or exc.code
            return
        setup = _decode(first)
        if setup is None or "setup" not in setup:
            await self.close(1007, "the first message must be a setup message")
            return
        self.record.setup = read_setup(setup["setup"])
        if not self.key_ok:
            await self.close(POLICY_CLOSE, "API key not valid. Please pass a valid API key.")
            return
        handle = self.record.setup.resumption_handle
        conv = self.standin._conversation_for(handle)
        if conv is None:
            await self.close(POLICY_CLOSE, "Invalid session resumption handle.")
            return
        if handle is not None:
            self.record.resumed_handle = handle
            self.record.handle_was_latest = handle == conv.latest_handle
            current = conv.engine.current
            if current is not None and not current.done:
                current.interrupted = True  # an answer cut by the lost connection
        self.conv = conv
        self.record.conversation_id = conv.id
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._greet)
            try:
                await self._read()
            finally:
                tg.cancel_scope.cancel()

    async def _greet(self) -> None:
        standin = self.standin
        if standin.drop_setup_complete:
            return
        if standin.setup_delay_s:
            await anyio.sleep(standin.setup_delay_s)
        self.record.session_id = f"standin-session-{secrets.token_hex(6)}"
        await self.send({"setupComplete": {"sessionId": self.record.session_id}}, "setupComplete")
        if standin.lifetime_s is not None:
            await anyio.sleep(standin.lifetime_s)
            left = standin.go_away_time_left_s
            await self.send({"goAway": {"timeLeft": duration(left)}}, "goAway")
            await anyio.sleep(left)
            await self.close(standin.go_away_close_code, "session lifetime reached")

    async def _read(self) -> None:
        while True:
            try:
                text = await self.conn.receive()
            except ConnectionClosed as exc:
                if self.record.close_code is None:
                    self.record.close_code = exc.code
                return
            message = _decode(text)
            if message is None:
                self.record.unknown.append({"raw": text if isinstance(text, str) else "<bytes>"})
                self.standin._notify()
                continue
            self.record.messages.append(message)
            await self._dispatch(message)
            self.standin._notify()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "realtimeInput" in message:
            await self._realtime_input(message["realtimeInput"])
        elif "clientContent" in message:
            content = message["clientContent"]
            self.record.client_contents.append(content)
            if content.get("turnComplete"):
                await self._answer()
        elif "toolResponse" in message:
            await self._tool_response(message["toolResponse"])
        else:
            self.record.unknown.append(message)

    async def _realtime_input(self, body: dict[str, Any]) -> None:
        audio = body.get("audio") or _first_chunk(body.get("mediaChunks"))
        if audio is not None:
            rate = mime_rate(audio.get("mimeType"))
            try:
                pcm = decode_base64(str(audio.get("data", "")))
            except (binascii.Error, ValueError):
                self.record.unknown.append({"realtimeInput": {"audio": "<bad base64>"}})
                return
            self.record.audio_rates.append(rate)
            self.record.audio_bytes += len(pcm)
            self._prompt_bytes += len(pcm)
            for edge in self.conv.engine.hear(pcm, rate):
                if edge == "speech_started":
                    await self._barge_in()
                else:
                    turn = self.conv.engine.turns
                    await self.send(
                        {"serverContent": {"inputTranscription": {"text": f"Caller turn {turn}."}}},
                        "inputTranscription",
                    )
                    await self._answer()
        if "text" in body:
            self.record.texts.append(str(body["text"]))
            await self._answer()
        for flag in ("audioStreamEnd", "activityStart", "activityEnd"):
            if flag in body:
                self.record.activity.append(flag)

    # --- answers ---------------------------------------------------------------------------------

    async def _answer(self) -> None:
        """Start the next scripted answer (a new trigger replaces one under way)."""
        await self._barge_in()
        response = self.conv.engine.start_response()
        fault = self.standin._take_close_fault()
        tool = response.answer.tool
        if tool is not None:
            name, args = tool
            self.conv.tool_calls += 1
            call_id = f"call-{self.conv.id}-{self.conv.tool_calls}"
            self._pending_tools = {call_id: name}
            self._waiting = response
            call = {"id": call_id, "name": name, "args": dict(args)}
            await self.send({"toolCall": {"functionCalls": [call]}}, "toolCall")
            self._waiting_fault = fault
            return
        self._speak_soon(response, fault)

    def _speak_soon(self, response: Response, fault: tuple[int, int] | None) -> None:
        scope = anyio.CancelScope()
        self._speaker = scope
        self._open = response
        self.start_soon(self._speak, response, scope, fault)

    async def _speak(
        self, response: Response, scope: anyio.CancelScope, fault: tuple[int, int] | None
    ) -> None:
        standin = self.standin
        step = standin.chunk_ms / 1000 / standin.pace
        mime = f"audio/pcm;rate={response.rate}"
        with scope:
            start = anyio.current_time()
            while not response.interrupted:
                chunk = response.next_chunk(anyio.current_time())
                if chunk is None:
                    break
                if response.sent == 1:
                    text = {"outputTranscription": {"text": response.answer.text}}
                    await self.send({"serverContent": text}, "outputTranscription")
                data = base64.b64encode(chunk).decode()
                part = {"inlineData": {"mimeType": mime, "data": data}}
                await self.send({"serverContent": {"modelTurn": {"parts": [part]}}}, "audio")
                if fault is not None and response.sent >= fault[0]:
                    await self.close(fault[1], "Internal error encountered.")
                    return
                await _sleep_until(start + response.sent * step)
            if response.interrupted:
                return
            await self.send({"serverContent": {"generationComplete": True}}, "generationComplete")
            if standin.turn_complete == "playback":
                end = response.playback_end()
                if end is not None:
                    await _sleep_until(end)
            response.done = True
            self._speaker = None
            await self._end_turn(response)

    async def _end_turn(self, response: Response) -> None:
        """``turnComplete``, then usage and a fresh resumption handle."""
        self._open = None
        await self.send({"serverContent": {"turnComplete": True}}, "turnComplete")
        prompt = self._prompt_bytes // 640 + 8  # ~one token per 20 ms heard, plus the prompt
        self._prompt_bytes = 0
        answer = response.sent_bytes // (2 * response.rate // 25) + 1  # ~25 tokens per second
        usage = {
            "promptTokenCount": prompt,
            "responseTokenCount": answer,
            "totalTokenCount": prompt + answer,
        }
        await self.send({"usageMetadata": usage}, "usageMetadata")
        setup = self.record.setup
        if setup is not None and setup.resumption:
            handle = self.standin._issue_handle(self.conv)
            self.record.handles_issued.append(handle)
            update = {"newHandle": handle, "resumable": True}
            await self.send({"sessionResumptionUpdate": update}, "sessionResumptionUpdate")

    async def _barge_in(self) -> None:
        """Caller speech (or a new trigger): stop what is playing, by the estimate."""
        now = anyio.current_time()
        response = self.conv.engine.interrupt(now)
        if response is None:
            return
        if response is self._waiting:
            ids = list(self._pending_tools)
            self._pending_tools = {}
            self._waiting = None
            self.record.cancelled_tool_ids.extend(ids)
            await self.send({"toolCallCancellation": {"ids": ids}}, "toolCallCancellation")
            return
        if self._speaker is not None:
            self._speaker.cancel()
            self._speaker = None
        await self.send({"serverContent": {"interrupted": True}}, "interrupted")
        if self._open is response:
            await self._end_turn(response)

    async def _tool_response(self, body: dict[str, Any]) -> None:
        self.record.tool_responses.append(body)
        for answer in body.get("functionResponses") or []:
            call_id = answer.get("id")
            if call_id in self._pending_tools:
                del self._pending_tools[call_id]
            else:
                self.record.unmatched_tool_ids.append(str(call_id))
        response = self._waiting
        if response is not None and not self._pending_tools and not response.interrupted:
            self._waiting = None
            self._speak_soon(response, self._waiting_fault)


def _decode(message: str | bytes) -> dict[str, Any] | None:
    """A client message as camelCase JSON, or None if it is not a JSON object."""
    try:
        value = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    result: dict[str, Any] = camelize(value)
    return result


def _first_chunk(chunks: Any) -> dict[str, Any] | None:
    """The first of the deprecated ``mediaChunks`` blobs, if any."""
    if isinstance(chunks, list) and chunks and isinstance(chunks[0], dict):
        return chunks[0]
    return None


async def _sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - anyio.current_time()))
