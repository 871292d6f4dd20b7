"""``GeminiLiveAdapter``: the bridge's :class:`~telcoflow.bridge.ModelAdapter` for Gemini Live
on the official ``google-genai`` client (extra: ``pip install "telcoflow-anyio[gemini]"``).

The adapter hides what makes Gemini Live awkward for a phone bridge:

- ``session.receive()`` ends at every ``turnComplete``; :meth:`GeminiLiveAdapter.events`
  re-enters it, so the bridge sees one stream for the whole session (the per-turn trap);
- ``interrupted`` may come after ``turnComplete`` (generation done, playback not): it is a
  :class:`~telcoflow.bridge.SpeechStarted` whenever it comes;
- the server ends sessions (``goAway``, or a close such as 1011): the adapter keeps the latest
  ``sessionResumptionUpdate.newHandle``, closes the old socket first (Gemini refuses a resume
  while it is open), reconnects with the handle and never re-seeds history with
  ``client_content`` (Gemini 3.1 closes with 1007 on that); caller audio sent meanwhile is
  buffered (at most :data:`SWITCH_BUFFER_S`, oldest dropped) and sent once resumed.

Invariants: events end only after :meth:`~GeminiLiveAdapter.aclose` or a fatal error (a
:class:`~telcoflow.bridge.ModelError` with ``fatal=True`` comes last); each model turn's audio
carries ``item_id`` ``"turn_N"``, a fresh N after every ``turnComplete`` or ``interrupted``;
an answer cut off by a lost session ends with ``GenerationDone`` and ``TurnDone`` before
``SessionResumed`` (nothing more of it will come);
output audio rates come from each chunk's mime type, never assumed. google-genai is asyncio
only: under trio :meth:`~GeminiLiveAdapter.open` raises at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ._adapter import SessionConfig, ToolResult, require_asyncio
from ._events import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SessionEnding,
    SessionResumed,
    SpeechStarted,
    ToolCall,
    ToolCalls,
    ToolCallsCancelled,
    TurnDone,
    Usage,
    UserTranscript,
)

if TYPE_CHECKING:
    from google import genai
    from google.genai import types

__all__ = ["DEFAULT_MODEL", "GeminiLiveAdapter"]

logger = logging.getLogger("telcoflow.bridge.gemini")

#: The Developer API's native-audio Live model current when this was written (the Gemini API
#: changelog of 2025-12-12); pass ``model=`` for another (Vertex names it
#: ``gemini-live-2.5-flash-native-audio``).
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"

#: Gemini's output rate when a chunk's mime type names none (the documented 24 kHz).
DEFAULT_OUTPUT_RATE = 24000

#: Bound on connecting (and on each resumption): a Live setup takes well under a second.
CONNECT_TIMEOUT = 10.0

#: Bound on closing a session (websockets' own close waits up to 10 s for the peer).
CLOSE_TIMEOUT = 2.0

#: Caller audio kept while the session is switched: enough to bridge a reconnect, little
#: enough that the model does not answer stale speech.
SWITCH_BUFFER_S = 2.0

#: Reconnect attempts in a row before the session counts as lost.
MAX_RESUME_ATTEMPTS = 3

#: Close codes after which a session is resumed: normal (the server's end of a lifetime),
#: going away, abnormal (no close frame), internal error, restart, try again later.
RESUMABLE_CODES = frozenset({1000, 1001, 1006, 1011, 1012, 1013, 1014})

#: What the model is told when asked to speak first without instructions.
DEFAULT_GREETING = "Greet the caller briefly and ask how you can help."


def _import_genai() -> tuple[Any, Any, Any]:
    try:
        from google import genai
        from google.genai import errors, types
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test venv
        raise ImportError(
            'GeminiLiveAdapter needs google-genai: pip install "telcoflow-anyio[gemini]"'
        ) from exc
    return genai, types, errors


def _rate_of(mime_type: str | None) -> int:
    """The ``rate=`` of ``audio/pcm;rate=N``, else Gemini's 24 kHz."""
    for param in (mime_type or "").split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "rate" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_OUTPUT_RATE


def _seconds(duration: str | None) -> float | None:
    """``"5s"`` / ``"0.5s"`` (a protobuf Duration) in seconds, or None."""
    if not duration:
        return None
    try:
        return float(duration.rstrip("s"))
    except ValueError:
        return None


class _Lost(Exception):
    """The session ended without our asking (``code``: the close code, or None)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code


class GeminiLiveAdapter:
    """A Gemini Live conversation for :func:`telcoflow.bridge.bridge`.

    ``client``: a ``genai.Client`` (default: ``genai.Client()``, which reads
    ``GEMINI_API_KEY``). ``config``: a ``LiveConnectConfig`` for anything provider-specific;
    what the bridge's :class:`~telcoflow.bridge.SessionConfig` gives is merged into it
    (instructions replace its ``system_instruction``, tools are added as function
    declarations, the voice, transcription and resumption fill in what it leaves unset).
    ``input_rate``: the rate caller audio is declared at (16 kHz is Gemini's native rate).
    ``greeting``: how :meth:`respond` makes the model speak first: ``"client_content"`` (a
    user turn, for Gemini 2.5) or ``"realtime_text"`` (a realtime text input, which Gemini 3.x
    needs before it runs inference).
    """

    can_truncate = False

    def __init__(
        self,
        client: genai.Client | None = None,
        *,
        model: str = DEFAULT_MODEL,
        config: types.LiveConnectConfig | None = None,
        input_rate: int = 16000,
        greeting: Literal["client_content", "realtime_text"] = "client_content",
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if greeting not in ("client_content", "realtime_text"):
            raise ValueError(
                f"greeting must be 'client_content' or 'realtime_text', not {greeting!r}"
            )
        self.input_rate = input_rate
        self.model = model
        self.greeting = greeting
        self.connect_timeout = connect_timeout
        self._client = client
        self._base_config = config
        self._config: Any = None
        self._session: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._handle: str | None = None
        self._closing = False
        self._closed = False
        self._switching = False
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._turn = 0
        self._item: str | None = None
        self._model_turns = 0
        self._call_ids: dict[str, str | None] = {}
        #: Tool results finished while the session was switching: sent once it is back.
        self._pending_results: list[Any] = []
        self._local_ids = 0
        #: Caller audio dropped while switching sessions (bytes), and sessions resumed.
        self.dropped_audio_bytes = 0
        self.resumptions = 0

    # --- the session -----------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        """The current ``AsyncSession`` (None before :meth:`open` and after :meth:`aclose`)."""
        return self._session

    @property
    def resumption_handle(self) -> str | None:
        """The latest resumption handle the server gave."""
        return self._handle

    def _ending(self) -> bool:
        """Whether :meth:`aclose` was called (a method: the flag changes across awaits)."""
        return self._closing

    async def open(self, config: SessionConfig) -> None:
        """Connect and wait (bounded) for the server's setup reply."""
        require_asyncio("GeminiLiveAdapter", "google-genai")
        genai, types, _ = _import_genai()
        if self._client is None:
            self._client = genai.Client()
        self._config = self._merge(types, config)
        if self._config.session_resumption is not None:
            self._handle = self._config.session_resumption.handle
        await self._connect(self._handle)

    def _merge(self, types: Any, session: SessionConfig) -> Any:
        base = self._base_config or types.LiveConnectConfig()
        update: dict[str, Any] = {}
        if base.response_modalities is None:
            update["response_modalities"] = [types.Modality.AUDIO]
        if session.instructions is not None:
            update["system_instruction"] = session.instructions
        if session.tools:
            declarations = [
                types.FunctionDeclaration(
                    name=tool.name,
                    description=tool.description,
                    parameters_json_schema=dict(tool.parameters),
                )
                for tool in session.tools
            ]
            update["tools"] = [*(base.tools or []), types.Tool(function_declarations=declarations)]
        if session.voice is not None and base.speech_config is None:
            update["speech_config"] = types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=session.voice)
                )
            )
        if session.transcription:
            if base.input_audio_transcription is None:
                update["input_audio_transcription"] = types.AudioTranscriptionConfig()
            if base.output_audio_transcription is None:
                update["output_audio_transcription"] = types.AudioTranscriptionConfig()
        if base.session_resumption is None:
            update["session_resumption"] = types.SessionResumptionConfig()
        return base.model_copy(update=update)

    async def _connect(self, handle: str | None) -> None:
        _, types, errors = _import_genai()
        resumption = self._config.session_resumption or types.SessionResumptionConfig()
        config = self._config.model_copy(
            update={"session_resumption": resumption.model_copy(update={"handle": handle})}
        )
        assert self._client is not None
        stack = contextlib.AsyncExitStack()
        try:
            with anyio.fail_after(self.connect_timeout):
                session = await stack.enter_async_context(
                    self._client.aio.live.connect(model=self.model, config=config)
                )
        except TimeoutError:
            await self._close_stack(stack)
            raise TimeoutError(
                f"Gemini Live did not answer the setup of {self.model} within "
                f"{self.connect_timeout:g} s"
            ) from None
        except errors.APIError as exc:
            await self._close_stack(stack)
            raise ConnectionError(f"Gemini Live refused the session: {exc}") from exc
        except BaseException:
            await self._close_stack(stack)
            raise
        self._stack, self._session = stack, session

    async def _close_stack(self, stack: contextlib.AsyncExitStack | None) -> None:
        if stack is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            try:
                await stack.aclose()
            except Exception as exc:  # a socket already gone: nothing left to close
                logger.debug("closing a Gemini session: %r", exc)

    async def _resume(self) -> None:
        """Close the old session, then connect again with the latest handle (a fresh session
        when there is none), and deliver the caller audio buffered meanwhile."""
        self._switching = True
        try:
            stack, self._stack, self._session = self._stack, None, None
            await self._close_stack(stack)
            for attempt in range(1, MAX_RESUME_ATTEMPTS + 1):
                if self._ending():
                    return
                try:
                    await self._connect(self._handle)
                except (ConnectionError, TimeoutError, OSError) as exc:
                    logger.warning("Gemini resume attempt %d failed: %s", attempt, exc)
                    if attempt == MAX_RESUME_ATTEMPTS:
                        raise _Lost(None, f"cannot resume the Gemini session: {exc}") from exc
                    await anyio.sleep(0.2 * 2**attempt)
                else:
                    break
            if self._ending():  # closed while connecting: this session is not wanted
                stack, self._stack, self._session = self._stack, None, None
                await self._close_stack(stack)
                return
            self.resumptions += 1
            self._item = None
            if self._pending_results:
                pending, self._pending_results = self._pending_results, []
                await self._session.send_tool_response(function_responses=pending)
            while self._buffer:
                pcm = self._buffer.popleft()
                self._buffered -= len(pcm)
                await self._send_audio_now(pcm)
        finally:
            self._switching = False

    # --- events ----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ModelEvent]:
        """Every event of the session: ``receive()`` re-entered after each turn, resumptions
        included."""
        _, _, errors = _import_genai()
        while not self._ending() and self._session is not None:
            lost = False
            async with contextlib.aclosing(self._session.receive()) as messages:
                while True:
                    try:
                        message = await anext(messages)
                    except StopAsyncIteration:
                        break  # the turn is over: receive() again (the per-turn trap)
                    except errors.APIError as exc:
                        if self._ending():
                            return
                        code = exc.code if isinstance(exc.code, int) else None
                        if code is None or code < 1000:  # an error payload, not a close
                            yield ModelError(f"Gemini reported: {exc}", str(code), fatal=False)
                            break
                        if code not in RESUMABLE_CODES:
                            yield ModelError(f"Gemini closed the session: {exc}", str(code), True)
                            return
                        logger.info("Gemini session closed (%s); resuming", exc)
                        lost = True
                        break
                    except (ValueError, TypeError) as exc:
                        # A malformed message (ValueError), or one with no field the library
                        # knows and no error code (its raise_error compares None: TypeError).
                        if self._ending():
                            return
                        yield ModelError(f"unreadable message from Gemini: {exc}", None, False)
                        break
                    except Exception as exc:
                        if self._ending():
                            return
                        if not _is_closed(exc):
                            raise
                        logger.info("Gemini session lost (%r); resuming", exc)
                        lost = True
                        break
                    batch = self._normalise(message)
                    for event in batch:
                        yield event
                    if any(isinstance(event, SessionEnding) for event in batch):
                        lost = True  # resume now, before the server closes
                        break
            if not lost or self._ending():
                continue
            cut = self._item
            if cut is not None:
                # The answer under way will never go on: its end, so the bridge finishes it.
                self._item = None
                yield GenerationDone(cut)
                yield TurnDone()
            try:
                await self._resume()
            except _Lost as exc:
                yield ModelError(str(exc), None, fatal=True)
                return
            if self._ending():
                return
            yield SessionResumed(resumed=self._handle is not None)

    def _new_item(self) -> str:
        if self._item is None:
            self._turn += 1
            self._item = f"turn_{self._turn}"
        return self._item

    def _normalise(self, message: Any) -> list[ModelEvent]:
        """The bridge's events for one ``LiveServerMessage``, in wire order."""
        out: list[ModelEvent] = []
        content = message.server_content
        if content is not None:
            if content.interrupted:
                out.append(SpeechStarted())
                self._item = None
            if content.input_transcription is not None and content.input_transcription.text:
                t = content.input_transcription
                out.append(UserTranscript(t.text, final=bool(t.finished)))
            if content.model_turn is not None:
                for part in content.model_turn.parts or []:
                    blob = part.inline_data
                    if blob is not None and blob.data:
                        out.append(
                            AudioDelta(blob.data, _rate_of(blob.mime_type), self._new_item())
                        )
            if content.output_transcription is not None and content.output_transcription.text:
                out.append(AgentTranscript(content.output_transcription.text, self._new_item()))
            if content.generation_complete and self._item is not None:
                out.append(GenerationDone(self._item))
            if content.turn_complete:
                if self._item is not None:
                    self._model_turns += 1
                self._item = None
                out.append(TurnDone())
        if message.tool_call is not None:
            calls = tuple(self._tool_call(fc) for fc in message.tool_call.function_calls or [])
            if calls:
                out.append(ToolCalls(calls))
                self._item = None  # what the model says after the results is a new answer
        if message.tool_call_cancellation is not None:
            ids = tuple(message.tool_call_cancellation.ids or ())
            out.append(ToolCallsCancelled(ids))
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self._handle = update.new_handle
        if message.usage_metadata is not None:
            usage = message.usage_metadata
            out.append(
                Usage(
                    input_tokens=usage.prompt_token_count or 0,
                    output_tokens=usage.response_token_count or 0,
                    raw=usage.model_dump(exclude_none=True),
                )
            )
        if message.go_away is not None:
            out.append(SessionEnding(_seconds(message.go_away.time_left)))
        return out

    def _tool_call(self, fc: Any) -> ToolCall:
        call_id = fc.id
        if not call_id:
            self._local_ids += 1
            call_id = f"local_call_{self._local_ids}"
        self._call_ids[call_id] = fc.id
        return ToolCall(call_id, fc.name or "", dict(fc.args or {}))

    # --- sending ---------------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        """Caller audio at :attr:`input_rate`; buffered (bounded) while switching sessions."""
        if self._ending():
            return
        if self._switching or self._session is None:
            self._keep(pcm)
            return
        try:
            await self._send_audio_now(pcm)
        except Exception as exc:
            if not _is_closed(exc):
                raise
            self._keep(pcm)  # the session is going: events() will resume it

    async def _send_audio_now(self, pcm: bytes) -> None:
        _, types, _ = _import_genai()
        blob = types.Blob(data=pcm, mime_type=f"audio/pcm;rate={self.input_rate}")
        await self._session.send_realtime_input(audio=blob)

    def _keep(self, pcm: bytes) -> None:
        self._buffer.append(pcm)
        self._buffered += len(pcm)
        limit = int(SWITCH_BUFFER_S * self.input_rate) * 2
        while self._buffered > limit and self._buffer:
            old = self._buffer.popleft()
            self._buffered -= len(old)
            self.dropped_audio_bytes += len(old)

    async def respond(self, instructions: str | None = None) -> None:
        """Make the model speak now: a user turn (``client_content``, only before the first
        model turn, so a resumed or later session is never re-seeded) or a realtime text."""
        _, types, _ = _import_genai()
        if self._session is None:
            raise RuntimeError("the Gemini session is not open")
        if self.greeting == "client_content" and not self._model_turns and not self.resumptions:
            turn = types.Content(
                role="user", parts=[types.Part(text=instructions or DEFAULT_GREETING)]
            )
            await self._session.send_client_content(turns=turn, turn_complete=True)
        else:
            await self._session.send_realtime_input(text=instructions or " ")

    async def interrupted(self, item_id: str | None, heard_ms: int) -> None:
        """Nothing to do: Gemini has no truncate API (it stopped on its own ``interrupted``)."""

    async def send_tool_results(self, results: Sequence[ToolResult]) -> None:
        """One ``tool_response`` with every result, ids matched to the calls."""
        if not results or self._ending():
            return
        _, types, _ = _import_genai()
        responses = []
        for result in results:
            output = result.output
            body = output if isinstance(output, dict) else {"output": output}
            responses.append(
                types.FunctionResponse(
                    id=self._call_ids.pop(result.id, result.id),
                    name=result.name,
                    response=body,
                )
            )
        if self._switching or self._session is None:
            self._pending_results += responses  # sent when the session is back (_resume)
            return
        try:
            await self._session.send_tool_response(function_responses=responses)
        except Exception as exc:
            if not _is_closed(exc):
                raise
            logger.info("Gemini session closed before tool results were sent: kept for resume")
            self._pending_results += responses

    async def aclose(self) -> None:
        """End the session (bounded); idempotent."""
        self._closing = True
        if self._closed:
            return
        self._closed = True
        stack, self._stack, self._session = self._stack, None, None
        self._buffer.clear()
        await self._close_stack(stack)


def _is_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is websockets' ConnectionClosed (the library re-exports it)."""
    try:
        from websockets import ConnectionClosed
    except ImportError:  # pragma: no cover - google-genai depends on websockets
        return False
    return isinstance(exc, ConnectionClosed)
