"""OpenAI Realtime (GA interface) as a bridge adapter, on the official ``openai`` client.

``OpenAIRealtimeAdapter()`` speaks to ``gpt-realtime`` through
``AsyncOpenAI().realtime.connect(model=...)``: caller audio goes up as
``input_audio_buffer.append`` (PCM16 at 24 kHz, or G.711 when the session says so), the
server's VAD takes turns and interrupts, and every server event comes back as one of
:mod:`~telcoflow.bridge._events`.

Invariants:

- :meth:`~OpenAIRealtimeAdapter.open` returns only once the server confirmed the session
  (``session.updated``), within ``ready_timeout``; it fails at once under trio (the library is
  asyncio-only) and with :class:`~telcoflow.exceptions.WSSConnectionError` when the server
  cannot be reached, refuses the key, or refuses the session;
- :meth:`~OpenAIRealtimeAdapter.events` yields for the whole session and ends when the
  connection closes (after a ``fatal`` :class:`ModelError` if it closed abnormally); an ``error``
  event is never fatal, as the API documents;
- the function calls of one response are yielded as one :class:`ToolCalls` after its
  ``response.done``, and answered with one ``function_call_output`` per call then one
  ``response.create``;
- an interruption cancels the active response, then truncates the interrupted item to what the
  caller heard, or deletes it when nothing was heard (a truncation to 0 ms is refused).

The ``openai`` package is the ``openai`` extra: ``pip install "telcoflow-anyio[openai]"``.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio

from ..exceptions import WSSConnectionError
from ._adapter import SessionConfig, ToolResult, require_asyncio
from ._events import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCalls,
    TurnDone,
    Usage,
    UserTranscript,
)

if TYPE_CHECKING:
    import openai
    from openai.resources.realtime.realtime import AsyncRealtimeConnection

__all__ = ["DEFAULT_MODEL", "OpenAIRealtimeAdapter", "RealtimeNormaliser", "session_body"]

logger = logging.getLogger("telcoflow_sdk.bridge.openai")

DEFAULT_MODEL = "gpt-realtime"
#: The transcription model asked for when :attr:`SessionConfig.transcription` is on.
TRANSCRIPTION_MODEL = "gpt-transcribe"
#: ``session.updated`` follows ``session.update`` within a round trip; ten seconds is a
#: server that will not answer.
READY_TIMEOUT = 10.0
#: The close handshake: the websockets client waits this long for the server's close frame.
CLOSE_TIMEOUT = 5.0
#: ``audio/pcm`` has one rate (``AudioPCM.rate: Literal[24000]``); G.711 is 8 kHz.
PCM_RATE = 24000
G711_RATE = 8000

_INSTALL = 'pip install "telcoflow-anyio[openai]"'


def _import_openai() -> Any:
    try:
        import openai
        import websockets  # noqa: F401 - the realtime extra
    except ImportError as exc:
        raise ImportError(
            f"OpenAIRealtimeAdapter needs the openai client with its realtime extra: {_INSTALL}"
        ) from exc
    return openai


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def session_body(config: SessionConfig, session: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``session.update`` body: what a phone bridge needs (PCM at 24 kHz both ways, server
    VAD that creates and interrupts responses, transcription if asked, the instructions, voice
    and tools of ``config``), with the application's own ``session`` merged over it."""
    pcm = {"type": "audio/pcm", "rate": PCM_RATE}
    audio_in: dict[str, Any] = {
        "format": dict(pcm),
        "turn_detection": {
            "type": "server_vad",
            "create_response": True,
            "interrupt_response": True,
        },
    }
    audio_out: dict[str, Any] = {"format": dict(pcm)}
    if config.transcription:
        audio_in["transcription"] = {"model": TRANSCRIPTION_MODEL}
    if config.voice:
        audio_out["voice"] = config.voice
    body: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": audio_out},
    }
    if config.instructions:
        body["instructions"] = config.instructions
    if config.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            }
            for t in config.tools
        ]
    return _merge(body, session or {})


def _format(body: Mapping[str, Any], side: str) -> str:
    fmt = ((body.get("audio") or {}).get(side) or {}).get("format") or {}
    return str(fmt.get("type", "audio/pcm"))


def _rate(kind: str) -> int:
    return PCM_RATE if kind == "audio/pcm" else G711_RATE


class RealtimeNormaliser:
    """Server events (the ``openai`` library's parsed models) in, bridge events out; no I/O.

    Keeps what spans events: the active response, the audio items whose generation has been
    reported done, and the function calls of each response until its ``response.done``.
    """

    def __init__(self, output_format: str = "audio/pcm") -> None:
        self.output_format = output_format
        self.rate = _rate(output_format)
        #: The response being generated (``response.created`` seen, ``response.done`` not).
        self.active_response: str | None = None
        #: ``response.cancel`` was sent: the server's "no active response" that may answer it
        #: (the response ended meanwhile) is expected, not an error to report.
        self.cancel_sent = False
        self._done_items: set[str] = set()
        self._item_response: dict[str, str] = {}
        self._audio_items: dict[str, list[str]] = {}
        self._calls: dict[str, list[ToolCall]] = {}

    def response_of(self, item_id: str) -> str | None:
        """The response that produced item ``item_id``, if it was seen."""
        return self._item_response.get(item_id)

    def _pcm(self, delta: str) -> bytes:
        data = base64.b64decode(delta)
        if self.output_format == "audio/pcm":
            return data
        from .. import audio

        if self.output_format == "audio/pcmu":
            return audio.ulaw_decode(data)
        return audio.alaw_decode(data)

    def _generation_done(self, item_id: str) -> list[ModelEvent]:
        if item_id in self._done_items:
            return []
        self._done_items.add(item_id)
        return [GenerationDone(item_id)]

    def feed(self, event: Any) -> list[ModelEvent]:
        """The bridge events for one server event (none for those a bridge does not need)."""
        kind = str(getattr(event, "type", ""))
        if kind == "response.output_audio.delta":
            item = str(event.item_id)
            self._item_response[item] = str(event.response_id)
            items = self._audio_items.setdefault(str(event.response_id), [])
            if item not in items:
                items.append(item)
            return [AudioDelta(self._pcm(event.delta), self.rate, item)]
        if kind == "response.output_audio.done":
            return self._generation_done(str(event.item_id))
        if kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            return [AgentTranscript(str(event.delta), str(event.item_id))]
        if kind == "response.output_audio_transcript.done":
            return [AgentTranscript(str(event.transcript), str(event.item_id), final=True)]
        if kind == "response.output_text.done":
            return [AgentTranscript(str(event.text), str(event.item_id), final=True)]
        if kind == "input_audio_buffer.speech_started":
            return [SpeechStarted()]
        if kind == "input_audio_buffer.speech_stopped":
            return [SpeechStopped()]
        if kind == "conversation.item.input_audio_transcription.delta":
            return [UserTranscript(str(event.delta or ""))]
        if kind == "conversation.item.input_audio_transcription.completed":
            return [UserTranscript(str(event.transcript), final=True)]
        if kind == "response.created":
            self.active_response = event.response.id
            return []
        if kind == "response.output_item.added":
            self._item_response[str(event.item.id)] = str(event.response_id)
            return []
        if kind == "response.function_call_arguments.done":
            self._calls.setdefault(str(event.response_id), []).append(
                ToolCall(str(event.call_id), str(event.name), _arguments(event))
            )
            return []
        if kind == "response.done":
            return self._response_done(event.response)
        if kind == "error":
            return self._error(event.error)
        logger.debug("openai realtime: %s not needed by the bridge", kind or event)
        return []

    def _response_done(self, response: Any) -> list[ModelEvent]:
        rid = str(response.id)
        if self.active_response == rid:
            self.active_response = None
        out: list[ModelEvent] = []
        for item in self._audio_items.pop(rid, ()):
            out += self._generation_done(item)
        usage = response.usage
        if usage is not None:
            raw = usage.to_dict() if hasattr(usage, "to_dict") else dict(usage)
            out.append(Usage(usage.input_tokens or 0, usage.output_tokens or 0, raw))
        out.append(TurnDone())
        calls = self._calls.pop(rid, [])
        if calls and response.status == "completed":
            out.append(ToolCalls(tuple(calls)))
        elif calls:
            logger.debug("openai realtime: %s was %s: its tool calls dropped", rid, response.status)
        return out

    def _error(self, error: Any) -> list[ModelEvent]:
        code = getattr(error, "code", None)
        message = str(getattr(error, "message", error))
        if code == "response_cancel_not_active" and self.cancel_sent:
            logger.debug("openai realtime: the cancelled response had ended already")
            return []
        return [ModelError(message, code=code, fatal=False)]


def _arguments(event: Any) -> Mapping[str, Any]:
    raw = event.arguments or "{}"
    try:
        parsed = json.loads(raw)
    except ValueError:
        logger.warning("openai realtime: arguments of %s are not JSON: %.200s", event.name, raw)
        return {}
    if not isinstance(parsed, dict):
        logger.warning("openai realtime: arguments of %s are not an object", event.name)
        return {}
    return parsed


def _output_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output)


class OpenAIRealtimeAdapter:
    """One conversation with an OpenAI realtime model (see the module's invariants).

    ``client``: an ``openai.AsyncOpenAI`` (default: one made from ``api_key``, ``base_url``
    and ``websocket_base_url``, or the ``OPENAI_*`` environment); ``session``: a
    ``session.update`` body merged over what the bridge needs (:func:`session_body`).
    """

    can_truncate = True

    def __init__(
        self,
        client: openai.AsyncOpenAI | None = None,
        *,
        model: str = DEFAULT_MODEL,
        session: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        websocket_base_url: str | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._client = client
        self._model = model
        self._session = dict(session or {})
        self._client_options = {
            "api_key": api_key,
            "base_url": base_url,
            "websocket_base_url": websocket_base_url,
        }
        self._ready_timeout = ready_timeout
        probe = session_body(SessionConfig(), self._session)
        self._input_format = _format(probe, "input")
        #: The PCM16 rate caller audio is wanted at: 24 kHz, or 8 kHz for a G.711 session.
        self.input_rate = _rate(self._input_format)
        self._normaliser = RealtimeNormaliser(_format(probe, "output"))
        self._conn: AsyncRealtimeConnection | None = None
        self._early: list[Any] = []
        self._closed = False
        #: The effective session the server confirmed (its ``session.updated``).
        self.session: Any = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (or a failed :meth:`open` closed the adapter)."""
        return self._closed

    # --- opening ---------------------------------------------------------------------------------

    async def open(self, config: SessionConfig) -> None:
        """Connect, send ``session.update``, and return once ``session.updated`` came back."""
        require_asyncio("OpenAIRealtimeAdapter", "openai")
        if self._conn is not None or self._closed:
            raise RuntimeError("OpenAIRealtimeAdapter.open: an adapter opens once")
        library = _import_openai()
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        client = self._client
        if client is None:
            options = {k: v for k, v in self._client_options.items() if v is not None}
            client = library.AsyncOpenAI(**options)
        body = session_body(config, self._session)
        where = f"OpenAI Realtime ({self._model})"
        try:
            with anyio.fail_after(self._ready_timeout):
                self._conn = await client.realtime.connect(model=self._model).enter()
                await self._conn.session.update(session=cast(Any, body))
                await self._await_ready(where)
        except TimeoutError:
            await self.aclose()
            raise WSSConnectionError(
                f"{where} did not confirm the session within {self._ready_timeout:g} s"
            ) from None
        except InvalidStatus as exc:
            await self.aclose()
            status = exc.response.status_code
            raise WSSConnectionError(
                f"{where} refused the connection with HTTP {status}"
                + (": check the API key" if status in (401, 403) else ""),
                status,
                fatal=status in (401, 403),
            ) from exc
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            await self.aclose()
            raise WSSConnectionError(f"{where} cannot be reached: {exc}") from exc
        except BaseException:
            await self.aclose()
            raise

    async def _await_ready(self, where: str) -> None:
        assert self._conn is not None
        while True:
            event = await self._conn.recv()
            if event.type == "session.updated":
                self.session = event.session
                return
            if event.type == "error":
                raise WSSConnectionError(
                    f"{where} refused the session: {event.error.message}", fatal=True
                )
            if event.type != "session.created":
                self._early.append(event)

    # --- the session -----------------------------------------------------------------------------

    def _connection(self, what: str) -> AsyncRealtimeConnection:
        if self._conn is None:
            raise RuntimeError(f"OpenAIRealtimeAdapter.{what}: open() it first")
        return self._conn

    async def events(self) -> AsyncIterator[ModelEvent]:
        """Every event of the session, normalised; ends when the connection closes."""
        from websockets.exceptions import ConnectionClosed

        if self._closed:
            return  # closed before the events were read: there are none
        conn = self._connection("events")
        normalise = self._normaliser.feed
        early, self._early = self._early, []
        for event in early:
            for out in normalise(event):
                yield out
        try:
            async for event in conn:
                for out in normalise(event):
                    yield out
        except ConnectionClosed as exc:
            if self.closed:
                return  # we closed it
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            yield ModelError(
                f"OpenAI Realtime closed the connection ({code}{': ' + reason if reason else ''})",
                code=str(code),
                fatal=True,
            )

    async def _send(self, what: str, event: Mapping[str, Any]) -> None:
        """Send one client event; after the connection closed, drop it (events() reports)."""
        from websockets.exceptions import ConnectionClosed

        if self._closed:
            return
        conn = self._connection(what)
        try:
            await conn.send(cast(Any, event))
        except ConnectionClosed:
            logger.debug("openai realtime: connection closed; %s not sent", event.get("type"))

    async def send_audio(self, pcm: bytes) -> None:
        """Caller audio (PCM16 at :attr:`input_rate`) to the input buffer."""
        data = pcm
        if self._input_format != "audio/pcm":
            from .. import audio

            data = (
                audio.ulaw_encode(pcm)
                if self._input_format == "audio/pcmu"
                else audio.alaw_encode(pcm)
            )
        await self._send(
            "send_audio",
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()},
        )

    async def respond(self, instructions: str | None = None) -> None:
        """``response.create`` (the greeting), optionally with instructions for this one."""
        event: dict[str, Any] = {"type": "response.create"}
        if instructions:
            event["response"] = {"instructions": instructions}
        await self._send("respond", event)

    async def interrupted(self, item_id: str | None, heard_ms: int) -> None:
        """Cancel the active response, then cut ``item_id`` to ``heard_ms`` (delete it if 0)."""
        normaliser = self._normaliser
        active = normaliser.active_response
        if item_id is not None and normaliser.response_of(item_id) not in (None, active):
            active = None  # that answer's response is over: the active one is a newer answer
        if active is not None:
            normaliser.cancel_sent = True
            await self._send("interrupted", {"type": "response.cancel", "response_id": active})
        if item_id is None:
            return
        if heard_ms <= 0:
            await self._send(
                "interrupted", {"type": "conversation.item.delete", "item_id": item_id}
            )
        else:
            await self._send(
                "interrupted",
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": int(heard_ms),
                },
            )

    async def send_tool_results(self, results: Sequence[ToolResult]) -> None:
        """One ``function_call_output`` per call, then one ``response.create``."""
        if not results:
            return
        for result in results:
            item = {
                "type": "function_call_output",
                "call_id": result.id,
                "output": _output_text(result.output),
            }
            await self._send(
                "send_tool_results", {"type": "conversation.item.create", "item": item}
            )
        await self._send("send_tool_results", {"type": "response.create"})

    async def aclose(self) -> None:
        """Close the connection (bounded, shielded); idempotent."""
        if self._closed:
            return
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await conn.close()
            except Exception as exc:  # a connection that failed already: nothing to close
                logger.debug("openai realtime: close failed: %r", exc)
