"""A local OpenAI Realtime server (GA interface) driven by the scripted model, for tests.

``async with OpenAIRealtimeStandIn() as s:`` serves plain ``ws://`` on 127.0.0.1 at
``/v1/realtime?model=...``, so the real ``openai`` client reaches it with
``AsyncOpenAI(base_url=s.base_url, api_key=s.api_key)``. Each connection is one
:class:`RealtimeSession` (in :attr:`OpenAIRealtimeStandIn.sessions`), a
:class:`~telcoflow.testing._engine.ScriptedConversation` behind the Realtime wire protocol:
server VAD on the caller's audio, answers as tones, function calls, cancellation, truncation.

Invariants:

- events are sent in the order the real server sends them: a response is ``response.created``,
  its item and content part, transcript and audio deltas, the ``*.done`` events, then
  ``response.done`` (``completed``, or ``cancelled`` when interrupted or cancelled), and at
  most one response is active per session;
- audio deltas are sent by a task of their own at ``pace`` times real time, so reading the
  client (and so barge-in) never waits for them;
- a truncation is accepted only for an audio item of this session and up to the audio
  generated for it (else the real server's ``error``); every client event is recorded before
  it is answered, so a test that sees an answer sees the record.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc

from .._net import ConnectFailed, ConnectionClosed, ServerHandshake, open_listener
from .._net import WebSocketConnection as _Connection
from .._net._serving import Serving, close_listener
from ._engine import DEFAULT_SCRIPT, Answer, Response, ScriptedConversation

__all__ = [
    "DEFAULT_API_KEY",
    "OpenAIRealtimeStandIn",
    "RealtimeSession",
    "ResponseRecord",
    "Truncation",
    "default_session",
    "merge_session",
    "truncate_problem",
]

logger = logging.getLogger("telcoflow_sdk.testing.openai")

DEFAULT_API_KEY = "sk-test"
PATH = "/v1/realtime"
#: The only rate ``audio/pcm`` has (``AudioPCM.rate: Literal[24000]``); G.711 is 8 kHz.
PCM_RATE = 24000
G711_RATE = 8000
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")


def default_session(model: str, session_id: str = "sess_standin") -> dict[str, Any]:
    """The session a real server reports in ``session.created``: server VAD that creates and
    interrupts responses, PCM at 24 kHz both ways, no transcription."""
    pcm = {"type": "audio/pcm", "rate": PCM_RATE}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "expires_at": 0,
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
        },
    }


def merge_session(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base`` as ``session.update`` applies it: objects merge key by key,
    anything else (lists, ``null``) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = merge_session(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def session_problem(session: Mapping[str, Any]) -> str | None:
    """Why the real server would refuse this effective session, or None."""
    audio = session.get("audio") or {}
    for side in ("input", "output"):
        fmt = (audio.get(side) or {}).get("format") or {}
        kind = fmt.get("type", "audio/pcm")
        if kind not in FORMATS:
            supported = "'audio/pcm', 'audio/pcmu', and 'audio/pcma'"
            return f"Invalid value: '{kind}'. Supported values are: {supported}."
        if kind == "audio/pcm" and fmt.get("rate", PCM_RATE) != PCM_RATE:
            return f"Invalid value: {fmt.get('rate')}. Supported values are: 24000."
    return None


def truncate_problem(
    response: Response | None, item_id: str, content_index: int, audio_end_ms: int
) -> str | None:
    """Why ``conversation.item.truncate`` fails (the real server's message), or None."""
    if response is None:
        return f"Item with item_id '{item_id}' not found"
    if content_index != 0:
        return f"Invalid content_index: {content_index}. Item '{item_id}' has 1 content part."
    if audio_end_ms < 0:
        return f"Invalid 'audio_end_ms': {audio_end_ms}. Expected a value >= 0."
    if audio_end_ms > response.sent_ms:
        return f"Audio content of {response.sent_ms}ms is already shorter than {audio_end_ms}ms"
    return None


def _format(session: Mapping[str, Any], side: str) -> str:
    fmt = ((session.get("audio") or {}).get(side) or {}).get("format") or {}
    return str(fmt.get("type", "audio/pcm"))


def _decode(kind: str, data: bytes) -> tuple[bytes, int]:
    """Client audio as PCM16 and its rate (G.711 needs the audio extra's numpy)."""
    if kind == "audio/pcm":
        return data, PCM_RATE
    from .. import audio

    return (audio.ulaw_decode(data) if kind == "audio/pcmu" else audio.alaw_decode(data)), G711_RATE


def _encode(kind: str, pcm: bytes) -> bytes:
    if kind == "audio/pcm":
        return pcm
    from .. import audio

    return audio.ulaw_encode(pcm) if kind == "audio/pcmu" else audio.alaw_encode(pcm)


@dataclass(frozen=True)
class Truncation:
    """An accepted ``conversation.item.truncate``, with what had been generated for the item."""

    item_id: str
    content_index: int
    audio_end_ms: int
    generated_ms: int


@dataclass
class ResponseRecord:
    """One response the session ran: ``kind`` is ``"audio"`` or ``"function_call"``."""

    id: str
    item_id: str
    kind: str
    status: str = "in_progress"
    usage: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None


@dataclass
class _Active:
    """The response being generated: set until its closing events start (``closing``)."""

    record: ResponseRecord
    response: Response
    scope: anyio.CancelScope
    words: list[str]
    closing: bool = False


class RealtimeSession:
    """One client connection: its records (for assertions) and its fault switches."""

    def __init__(
        self,
        stand_in: OpenAIRealtimeStandIn,
        conn: _Connection,
        model: str,
        headers: dict[str, str],
        engine: ScriptedConversation,
    ) -> None:
        self._stand_in = stand_in
        self._conn = conn
        self.model = model
        #: The upgrade request's headers (lower-case names).
        self.headers = headers
        self.engine = engine
        #: The effective session, as last sent in ``session.created``/``session.updated``.
        self.session = default_session(model, f"sess_{len(stand_in.sessions) + 1}")
        #: Every ``session.update`` body (its ``session`` object), in order.
        self.updates: list[dict[str, Any]] = []
        #: Every client event's type, in order (audio appends included).
        self.received: list[str] = []
        self.responses: list[ResponseRecord] = []
        #: ``response.create`` bodies (the ``response`` object, ``{}`` if none), in order.
        self.response_creates: list[dict[str, Any]] = []
        self.truncations: list[Truncation] = []
        self.deletes: list[str] = []
        #: ``function_call_output`` items received: ``{"call_id", "output"}``.
        self.tool_outputs: list[dict[str, Any]] = []
        self.cancels = 0
        #: The ``error`` objects sent, in order.
        self.errors_sent: list[dict[str, Any]] = []
        #: When (``anyio.current_time()``) the client closed the connection, and its code.
        self.client_closed_at: float | None = None
        self.close_code: int | None = None
        self.closed = False
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._items: dict[str, str] = {}  # item id -> kind
        self._audio: dict[str, Response] = {}  # audio item id -> its generation
        self._calls: set[str] = set()  # function call_ids issued
        self._active: _Active | None = None
        self._pending_tool: Response | None = None
        self._user_item: str | None = None
        self._last_item: str | None = None
        self._input_ms = 0.0
        self._server_closing = False
        self._tg: anyio.abc.TaskGroup | None = None

    # --- faults ----------------------------------------------------------------------------------

    async def send_error(
        self, message: str = "The server had an error", code: str | None = "server_error"
    ) -> None:
        """An ``error`` event out of the blue; the connection stays usable (as the real one)."""
        await self._error(message, code=code, type_="server_error")

    async def close(self, code: int = 1011, reason: str = "internal error") -> None:
        """Close the connection from the server's side (1011: the server failed)."""
        self._server_closing = True
        await self._conn.aclose(code, reason)

    # --- sending ---------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def _send(self, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(self._events)}", **event}
        try:
            await self._conn.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed:
            pass  # the reader sees the close and ends the session
        self._stand_in._notify()

    async def _error(
        self,
        message: str,
        *,
        code: str | None = None,
        type_: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        error = {
            "type": type_,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        }
        self.errors_sent.append(error)
        await self._send({"type": "error", "error": error})

    # --- serving ---------------------------------------------------------------------------------

    async def serve(self, delay_created: float) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if delay_created:
                    await anyio.sleep(delay_created)
                await self._send({"type": "session.created", "session": self.session})
                try:
                    while True:
                        message = await self._conn.receive()
                        await self._dispatch(message)
                except ConnectionClosed as exc:
                    self.close_code = exc.code
                    if not self._server_closing:
                        self.client_closed_at = anyio.current_time()
                tg.cancel_scope.cancel()
        finally:
            self.closed = True
            self._stand_in._notify()

    async def _dispatch(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            await self._error("The message is not valid JSON.", code="invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self._error(
                "Missing required parameter: 'type'.", code="missing_required_parameter"
            )
            return
        kind = event["type"]
        self.received.append(kind)
        handler = _HANDLERS.get(kind)
        if handler is None:
            await self._error(
                f"Invalid value: '{kind}'. Supported values are: {', '.join(sorted(_HANDLERS))}.",
                code="invalid_value",
                param="type",
                event_id=event.get("event_id"),
            )
            return
        await handler(self, event)
        self._stand_in._notify()

    # --- client events ---------------------------------------------------------------------------

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        body = event.get("session")
        if not isinstance(body, dict):
            await self._error("Missing required parameter: 'session'.", param="session")
            return
        self.updates.append(body)
        merged = merge_session(self.session, body)
        problem = session_problem(merged)
        if problem is not None:
            await self._error(problem, code="invalid_value", event_id=event.get("event_id"))
            return
        self.session = merged
        self.engine.out_rate = PCM_RATE if _format(merged, "output") == "audio/pcm" else G711_RATE
        await self._send({"type": "session.updated", "session": self.session})

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session["audio"]["input"].get("turn_detection")
        return td if isinstance(td, dict) else None

    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self._error(
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                code="invalid_value",
                param="audio",
            )
            return
        pcm, rate = _decode(_format(self.session, "input"), data)
        start_ms = self._input_ms
        self._input_ms += len(pcm) * 1000 / (2 * rate)
        edges = self.engine.hear(pcm, rate)
        td = self._turn_detection()
        if td is None:
            return  # manual turns: the client commits
        for edge in edges:
            if edge == "speech_started":
                await self._speech_started(td, start_ms)
            else:
                await self._speech_stopped(td)

    async def _speech_started(self, td: Mapping[str, Any], start_ms: float) -> None:
        self._user_item = self._id("item_user")
        # The generation stops before the event goes out, so exactly ``late_deltas`` of its
        # deltas follow ``speech_started``.
        active = self._interrupt() if td.get("interrupt_response", True) else None
        padding = int(td.get("prefix_padding_ms", 300))
        await self._send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": max(0, int(start_ms) - padding),
                "item_id": self._user_item,
            }
        )
        if active is None:
            return
        kind = _format(self.session, "output")
        now = anyio.current_time()
        for _ in range(self._stand_in.late_deltas):
            chunk = active.response.next_chunk(now)
            if chunk is None:
                break
            await self._audio_delta(active, _encode(kind, chunk))
        await self._finish(active, "cancelled", "turn_detected")

    def _interrupt(self) -> _Active | None:
        """Interrupt what plays; the response to close as cancelled if it was generating."""
        if self._pending_tool is not None and self.engine.current is self._pending_tool:
            return None  # the answer waits for a tool result: nothing plays
        interrupted = self.engine.interrupt(anyio.current_time())
        active = self._active
        if interrupted is None or active is None or active.response is not interrupted:
            return None  # nothing, or an answer generated already and (by estimate) playing
        if active.closing:
            return None
        active.closing = True
        active.scope.cancel()
        return active

    async def _speech_stopped(self, td: Mapping[str, Any]) -> None:
        item = self._user_item or self._id("item_user")
        await self._send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(self._input_ms),
                "item_id": item,
            }
        )
        await self._commit(item)
        if td.get("create_response", True) and self._active is None and self._pending_tool is None:
            await self._start_response(None)

    async def _commit(self, item: str) -> None:
        self._user_item = None
        await self._send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item,
                "previous_item_id": self._last_item,
            }
        )
        user = {
            "id": item,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._item_added(item, "user", user)
        transcription = self.session["audio"]["input"].get("transcription")
        if transcription:
            turns = self._stand_in.user_transcripts
            n = self.engine.turns
            text = turns[(n - 1) % len(turns)] if turns else f"Caller turn {n}."
            await self._send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(self._input_ms / 1000, 3)},
                }
            )

    async def _item_added(self, item_id: str, kind: str, item: dict[str, Any]) -> None:
        self._items[item_id] = kind
        await self._send(
            {"type": "conversation.item.added", "previous_item_id": self._last_item, "item": item}
        )
        await self._send(
            {"type": "conversation.item.done", "previous_item_id": self._last_item, "item": item}
        )
        self._last_item = item_id

    async def _on_commit(self, event: dict[str, Any]) -> None:
        await self._commit(self._user_item or self._id("item_user"))

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._user_item = None
        await self._send({"type": "input_audio_buffer.cleared"})

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        body = event.get("response")
        body = body if isinstance(body, dict) else {}
        self.response_creates.append(body)
        if self._active is not None:
            await self._error(
                "Conversation already has an active response in progress: "
                f"{self._active.record.id}. Wait until the response is finished before "
                "creating a new one.",
                code="conversation_already_has_active_response",
                event_id=event.get("event_id"),
            )
            return
        instructions = body.get("instructions")
        await self._start_response(instructions if isinstance(instructions, str) else None)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        active = self._active
        wanted = event.get("response_id")
        if active is None or active.closing or wanted not in (None, active.record.id):
            await self._error(
                "Cancellation failed: no active response found",
                code="response_cancel_not_active",
                event_id=event.get("event_id"),
            )
            return
        self.cancels += 1
        active.closing = True
        active.scope.cancel()
        active.response.interrupted = True
        await self._finish(active, "cancelled", "client_cancelled")

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self._error("Missing required parameter: 'item'.", param="item")
            return
        item = dict(item)
        item_id = item.get("id") or self._id("item")
        item["id"] = item_id
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._calls:
                await self._error(
                    f"Tool call ID '{call_id}' not found in conversation.",
                    code="invalid_tool_call_id",
                    param="item.call_id",
                    event_id=event.get("event_id"),
                )
                return
            self.tool_outputs.append({"call_id": call_id, "output": item.get("output")})
        await self._item_added(str(item_id), str(item.get("type")), item)

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        index = event.get("content_index", 0)
        end_ms = event.get("audio_end_ms")
        if not isinstance(end_ms, int) or not isinstance(index, int):
            await self._error("Missing required parameter: 'audio_end_ms'.", param="audio_end_ms")
            return
        response = self._audio.get(item_id)
        problem = truncate_problem(response, item_id, index, end_ms)
        if problem is not None:
            await self._error(problem, code="invalid_value", event_id=event.get("event_id"))
            return
        assert response is not None
        self.truncations.append(Truncation(item_id, index, end_ms, response.sent_ms))
        await self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": index,
                "audio_end_ms": end_ms,
            }
        )

    async def _on_delete(self, event: dict[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        if item_id not in self._items:
            await self._error(
                f"Item with item_id '{item_id}' not found",
                code="item_not_found",
                param="item_id",
                event_id=event.get("event_id"),
            )
            return
        del self._items[item_id]
        self._audio.pop(item_id, None)
        self.deletes.append(item_id)
        await self._send({"type": "conversation.item.deleted", "item_id": item_id})

    # --- responses -------------------------------------------------------------------------------

    async def _start_response(self, instructions: str | None) -> None:
        response = self._pending_tool
        self._pending_tool = None
        if response is None:
            response = self.engine.start_response()
            if response.answer.tool is not None:
                await self._function_call(response, instructions)
                return
        record = ResponseRecord(self._id("resp"), response.id, "audio", instructions=instructions)
        self.responses.append(record)
        active = _Active(record, response, anyio.CancelScope(), response.answer.text.split())
        self._active = active
        self._audio[response.id] = response
        item = self._message(response.id, "in_progress", "")
        await self._send({"type": "response.created", "response": self._response(record, [])})
        await self._send(
            {
                "type": "response.output_item.added",
                "response_id": record.id,
                "output_index": 0,
                "item": item,
            }
        )
        await self._item_added(response.id, "message", item)
        await self._send(
            {
                **self._part(active),
                "type": "response.content_part.added",
                "part": {"type": "audio", "transcript": ""},
            }
        )
        assert self._tg is not None
        self._tg.start_soon(self._stream, active)

    async def _stream(self, active: _Active) -> None:
        """Send the answer's audio at ``pace`` times real time, then its closing events."""
        stand_in = self._stand_in
        kind = _format(self.session, "output")
        gap = self.engine.chunk_ms / 1000 / stand_in.pace
        with active.scope:
            while (chunk := active.response.next_chunk(anyio.current_time())) is not None:
                if active.words:
                    await self._send(
                        {
                            **self._part(active),
                            "type": "response.output_audio_transcript.delta",
                            "delta": active.words.pop(0) + (" " if active.words else ""),
                        }
                    )
                await self._audio_delta(active, _encode(kind, chunk))
                await anyio.sleep(gap)
            active.closing = True
            await self._finish(active, "completed", None)

    async def _audio_delta(self, active: _Active, data: bytes) -> None:
        await self._send(
            {
                **self._part(active),
                "type": "response.output_audio.delta",
                "delta": base64.b64encode(data).decode(),
            }
        )

    async def _finish(self, active: _Active, status: str, reason: str | None) -> None:
        """The closing events of an audio response (also sent, as the real server does, when
        it was cancelled)."""
        self._active = None
        record, response = active.record, active.response
        text = response.answer.text
        if status != "completed":
            heard = len(text.split()) - len(active.words)
            text = " ".join(text.split()[:heard])
        part = self._part(active)
        await self._send({**part, "type": "response.output_audio.done"})
        await self._send(
            {**part, "type": "response.output_audio_transcript.done", "transcript": text}
        )
        await self._send(
            {
                **part,
                "type": "response.content_part.done",
                "part": {"type": "audio", "transcript": text},
            }
        )
        item_status = "completed" if status == "completed" else "incomplete"
        item = self._message(response.id, item_status, text)
        await self._send(
            {
                "type": "response.output_item.done",
                "response_id": record.id,
                "output_index": 0,
                "item": item,
            }
        )
        record.status = status
        record.usage = _usage(10, len(text.split()), response.sent_ms // 50)
        body = self._response(record, [item])
        if reason is not None:
            body["status_details"] = {"type": status, "reason": reason}
        await self._send({"type": "response.done", "response": body})

    async def _function_call(self, response: Response, instructions: str | None) -> None:
        """A response that only calls the answer's tool; the answer is spoken on the next
        ``response.create`` (after the client sent the result)."""
        assert response.answer.tool is not None
        name, args = response.answer.tool
        call_id, item_id = self._id("call"), self._id("item_fc")
        self._calls.add(call_id)
        record = ResponseRecord(
            self._id("resp"), item_id, "function_call", instructions=instructions
        )
        self.responses.append(record)
        arguments = json.dumps(dict(args))
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        where = {"response_id": record.id, "item_id": item_id, "output_index": 0}
        await self._send({"type": "response.created", "response": self._response(record, [])})
        await self._send(
            {
                "type": "response.output_item.added",
                "response_id": record.id,
                "output_index": 0,
                "item": item,
            }
        )
        await self._item_added(item_id, "function_call", item)
        await self._send(
            {
                **where,
                "type": "response.function_call_arguments.delta",
                "call_id": call_id,
                "delta": arguments,
            }
        )
        await self._send(
            {
                **where,
                "type": "response.function_call_arguments.done",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
        done = {**item, "status": "completed", "arguments": arguments}
        await self._send(
            {
                "type": "response.output_item.done",
                "response_id": record.id,
                "output_index": 0,
                "item": done,
            }
        )
        record.status = "completed"
        record.usage = _usage(10, len(arguments) // 4, 0)
        self._pending_tool = response
        await self._send({"type": "response.done", "response": self._response(record, [done])})

    def _part(self, active: _Active) -> dict[str, Any]:
        return {
            "response_id": active.record.id,
            "item_id": active.response.id,
            "output_index": 0,
            "content_index": 0,
        }

    def _message(self, item_id: str, status: str, transcript: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_audio", "transcript": transcript}],
        }

    def _response(self, record: ResponseRecord, output: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": "realtime.response",
            "id": record.id,
            "status": record.status,
            "status_details": None,
            "output": output,
            "conversation_id": "conv_standin",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": self.session["audio"]["output"]},
            "usage": record.usage or None,
            "metadata": None,
        }
        return body


def _usage(input_tokens: int, text_tokens: int, audio_tokens: int) -> dict[str, Any]:
    output = text_tokens + audio_tokens
    return {
        "total_tokens": input_tokens + output,
        "input_tokens": input_tokens,
        "output_tokens": output,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
    }


_Handler = Callable[[RealtimeSession, dict[str, Any]], Awaitable[None]]
_HANDLERS: dict[str, _Handler] = {
    "session.update": RealtimeSession._on_session_update,
    "input_audio_buffer.append": RealtimeSession._on_append,
    "input_audio_buffer.commit": RealtimeSession._on_commit,
    "input_audio_buffer.clear": RealtimeSession._on_clear,
    "response.create": RealtimeSession._on_response_create,
    "response.cancel": RealtimeSession._on_response_cancel,
    "conversation.item.create": RealtimeSession._on_item_create,
    "conversation.item.truncate": RealtimeSession._on_truncate,
    "conversation.item.delete": RealtimeSession._on_delete,
}


class OpenAIRealtimeStandIn(Serving):
    """An OpenAI Realtime server on a free loopback port; ``async with`` it (see the module).

    ``script``: the answers, in order (each session starts from the first); ``pace``: how many
    times faster than real time audio is sent; ``late_deltas``: audio deltas of an interrupted
    response still sent after ``speech_started`` (what a bridge must drop);
    ``session_created_delay``: seconds before ``session.created`` (a slow server).
    """

    def __init__(
        self,
        script: Sequence[Answer] = DEFAULT_SCRIPT,
        *,
        api_key: str = DEFAULT_API_KEY,
        pace: float = 2.0,
        chunk_ms: int = 40,
        late_deltas: int = 0,
        session_created_delay: float = 0.0,
        user_transcripts: Sequence[str] = (),
        engine_options: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if pace <= 0:
            raise ValueError(f"pace must be positive, not {pace!r}")
        self.script = tuple(script)
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.late_deltas = late_deltas
        self.session_created_delay = session_created_delay
        self.user_transcripts = tuple(user_transcripts)
        self.engine_options = dict(engine_options or {})
        self.host = host
        self.port = port
        self.sessions: list[RealtimeSession] = []
        #: Upgrades refused: ``(status, path)``.
        self.rejected: list[tuple[int, str]] = []
        self._changed = anyio.Event()

    @property
    def base_url(self) -> str:
        """For ``AsyncOpenAI(base_url=...)`` (the client turns ``http`` into ``ws``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def websocket_base_url(self) -> str:
        """For ``AsyncOpenAI(websocket_base_url=...)``."""
        return f"ws://{self.host}:{self.port}/v1"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever a session changes."""
        while not predicate():
            await self._changed.wait()

    async def next_session(self, index: int | None = None) -> RealtimeSession:
        """The session with ``index`` (default: the next one to open) once it is open."""
        want = len(self.sessions) if index is None else index
        await self.wait_for(lambda: len(self.sessions) > want)
        return self.sessions[want]

    async def _start(self, stack: AsyncExitStack) -> None:
        listener = await open_listener(self.host, self.port)
        stack.push_async_callback(close_listener, listener)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_address)[1])
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(listener.serve, self._handle)

    async def aclose(self) -> None:
        """Close every connection (1001) and stop serving; idempotent."""
        await super().aclose()

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        conn: _Connection | None = None
        try:
            try:
                handshake = await ServerHandshake.start(stream, b"")
            except ConnectFailed as exc:
                logger.debug("openai stand-in: bad request: %s", exc)
                return
            target = urlsplit(handshake.request.target)
            if target.path != PATH:
                self.rejected.append((404, target.path))
                await handshake.reject(404, f"no WebSocket endpoint at {target.path}")
                return
            auth = handshake.headers.get("authorization", "")
            if auth != f"Bearer {self.api_key}":
                self.rejected.append((401, target.path))
                await handshake.reject(
                    401,
                    json.dumps(
                        {
                            "error": {
                                "message": "Incorrect API key provided.",
                                "type": "invalid_request_error",
                                "code": "invalid_api_key",
                            }
                        }
                    ),
                )
                self._notify()
                return
            model = parse_qs(target.query).get("model", [""])[0]
            conn = await handshake.accept("openai stand-in")
            engine = ScriptedConversation(
                script=self.script, chunk_ms=self.chunk_ms, **self.engine_options
            )
            session = RealtimeSession(self, conn, model, handshake.headers, engine)
            self.sessions.append(session)
            self._notify()
            await session.serve(self.session_created_delay)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            logger.exception("openai stand-in: connection handler failed")
        finally:
            with anyio.CancelScope(shield=True):
                if conn is not None:
                    await conn.aclose(1001, "stand-in shutting down")
                await anyio.aclose_forcefully(stream)
