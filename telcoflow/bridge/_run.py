"""``bridge(call, model)``: one phone call against one realtime voice model, until either ends.

Tasks, all in one task group that the call's end cancels:

- **uplink**: caller audio → one streaming resampler (call rate → model rate, never reset) →
  the model; until the model is ready it is kept (the last ``prebuffer_s`` seconds);
- **reader**: the model's events, handled at once; it never waits for playback, so a barge-in
  is acted on even while an answer longer than the call's send buffer is queued;
- **player**: answer audio → ``call.send_audio(wait=True)``; it records where each answer
  starts in the played stream (the playout ledger);
- a task per batch of tool calls, one per call inside it, and the farewell watcher.

Invariants:

- **Barge-in is one step.** The heard position is read, the queued answer audio is dropped
  (local list, the player's in-flight send, the call's buffer and the server's playout via
  ``clear_send_audio_buffer``: one ``agent.interrupt``), the downlink resampler is reset, the
  interrupted items are marked so their late deltas are dropped, and only then is the model
  told (``interrupted(item, heard_ms)``). The statements up to the clear run without a
  checkpoint between them, so the player cannot hand over stale audio in between; entries it
  had already taken carry an epoch and are skipped when it is stale.
- **Each answer's tail is heard**: the downlink resampler is flushed at ``GenerationDone``.
- **The model session is closed within ``close_timeout``** whenever the bridge returns or is
  cancelled (shielded), so no session is left open and billed after the caller hangs up.
- Nothing the model or a tool does raises out of the bridge once it is open: a lost model
  session ends the bridge with ``ended_by="model"`` and leaves the call to the application;
  only failing to open the session raises (:class:`ModelConnectError`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from .._core import CallState
from .._net import Pulse
from ..audio import Resampler, rms
from ..call import ActiveCall
from ..exceptions import BufferClosedError, WSSCallClosedError, WSSCallError, WSSError
from ._adapter import ModelAdapter, SessionConfig, ToolResult
from ._events import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SessionEnding,
    SessionResumed,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCalls,
    ToolCallsCancelled,
    TurnDone,
    Usage,
    UserTranscript,
)
from ._playout import PlayoutLedger
from ._tools import Tool, run_tool
from ._transcript import TranscriptBuilder, Turn

if sys.version_info < (3, 11):  # pragma: no cover - the backport on 3.10
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "BridgeResult",
    "BridgeStats",
    "Interruption",
    "ModelConnectError",
    "ToolRun",
    "TurnLatency",
    "bridge",
]

logger = logging.getLogger("telcoflow_sdk.bridge")

#: Caller speech louder than this (RMS, 0..1) interrupts our playout with ``local_barge_in``.
LOCAL_BARGE_IN_RMS = 0.02
#: With end_call/transfer armed: how long the model has to start its farewell.
FAREWELL_START_S = 3.0
#: Finished turns waiting for a slow ``on_transcript`` hook before one is dropped.
MAX_PENDING_TRANSCRIPTS = 100

EndedBy = Literal["call", "end_call", "transfer", "model"]


class ModelConnectError(WSSError):
    """The model session could not be opened; the call is untouched (play a message, transfer
    or hang up)."""


@dataclass
class TurnLatency:
    """One answer's latency from the caller's end of speech (None where the model gives no
    end-of-speech signal, as Gemini does not)."""

    item_id: str
    received_s: float | None = None
    played_s: float | None = None


@dataclass
class Interruption:
    item_id: str
    heard_ms: int
    at_s: float


@dataclass
class ToolRun:
    name: str
    id: str
    duration_s: float
    outcome: Literal["ok", "error", "cancelled"]


@dataclass
class BridgeStats:
    """What the bridge measured; times in seconds, ``*_at`` since the bridge started."""

    model_connect_s: float | None = None
    #: From the call being answered (or the bridge starting, if it was answered already) to
    #: the first byte of agent audio *played* to the caller.
    ttfa_s: float | None = None
    turns: list[TurnLatency] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)
    late_deltas_dropped: int = 0
    tools: list[ToolRun] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    model_errors: int = 0
    resumptions: int = 0
    bytes_to_model: int = 0
    bytes_to_caller: int = 0


@dataclass
class BridgeResult:
    """How the conversation went: its transcript, its figures and what ended it."""

    transcript: list[Turn]
    stats: BridgeStats
    #: "call" (it ended: ``reason`` says why), "end_call" or "transfer" (the model's tools),
    #: "model" (the model session ended or failed: the call is still up).
    ended_by: EndedBy
    reason: str | None = None


class _Playlist:
    """Answer audio waiting for the player: bounded in bytes, cleared on barge-in."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        #: The player holds an entry it has not finished handing to the call.
        self.busy = False
        self._items: deque[tuple[int, str, bytes]] = deque()
        self._changed = Pulse()

    async def put(self, epoch: int, item: str, pcm: bytes) -> None:
        while self.bytes >= self.max_bytes:  # bounded: the model waits, beyond minutes of audio
            await self._changed.wait()
        self._items.append((epoch, item, pcm))
        self.bytes += len(pcm)
        self._changed.fire()

    async def get(self) -> tuple[int, str, bytes]:
        """The next entry; the list stays :attr:`busy` until :meth:`release`."""
        while not self._items:
            await self._changed.wait()
        entry = self._items.popleft()
        self.bytes -= len(entry[2])
        self.busy = True
        self._changed.fire()
        return entry

    def release(self) -> None:
        self.busy = False
        self._changed.fire()

    async def empty(self) -> None:
        """Wait until every entry has been handed to the call."""
        while self._items or self.busy:
            await self._changed.wait()

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
        self._changed.fire()


class _Converter:
    """PCM16 from one rate to another; a pass-through (no soxr needed) when they are equal."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self._r = None if from_rate == to_rate else Resampler(from_rate, to_rate)

    def process(self, pcm: bytes) -> bytes:
        return pcm if self._r is None else self._r.process(pcm)

    def flush(self) -> bytes:
        return b"" if self._r is None else self._r.flush()


def _call_is_over(exc: BaseException) -> bool:
    return isinstance(exc, (BufferClosedError, WSSCallClosedError))


class _Bridge:
    def __init__(
        self,
        call: ActiveCall,
        model: ModelAdapter,
        config: SessionConfig,
        tools: Sequence[Tool],
        *,
        greeting: str | bool | None,
        answer: bool,
        prebuffer_s: float,
        max_queued_s: float,
        open_timeout: float,
        close_timeout: float,
        farewell_timeout: float,
        barge_in_farewell: bool,
        local_barge_in: bool,
        on_transcript: Callable[[Turn], Any] | None,
    ) -> None:
        self.call, self.model, self.config = call, model, config
        self.tools = {t.name: t for t in tools}
        self.greeting, self.answer = greeting, answer
        self.prebuffer_bytes = int(prebuffer_s * model.input_rate) * 2
        self.open_timeout, self.close_timeout = open_timeout, close_timeout
        self.farewell_timeout = farewell_timeout
        self.barge_in_farewell, self.local_barge_in = barge_in_farewell, local_barge_in
        self.on_transcript = on_transcript
        self.rate = call.sample_rate
        self.stats = BridgeStats()
        self.ledger = PlayoutLedger(self.rate)
        self.transcript = TranscriptBuilder()
        self.playlist = _Playlist(int(max_queued_s * self.rate) * 2)
        self.ended_by: EndedBy | None = None
        self.reason: str | None = None
        self._t0 = anyio.current_time()
        self._answered_at: float | None = None
        self._answered = anyio.Event()
        self._ready = anyio.Event()
        self._epoch = 0
        self._send_scope: anyio.CancelScope | None = None
        self._down: _Converter | None = None
        self._open_items: list[str] = []  # answers that may still be playing, in order
        self._generated: set[str] = set()
        self._dropped: set[str] = set()
        self._latency: dict[str, TurnLatency] = {}
        self._speech_stopped_at: float | None = None
        self._tool_scopes: dict[str, anyio.CancelScope] = {}
        self._farewell: anyio.CancelScope | None = None
        self._farewell_items: set[str] | None = None
        self._farewell_started = anyio.Event()
        self._farewell_generated = anyio.Event()
        self._carry = b""
        self._carry_of: tuple[str, int] | None = None
        self._heard_when_dropped: dict[str, int] = {}
        self._transcripts_in, self._transcripts_out = anyio.create_memory_object_stream[Turn](
            MAX_PENDING_TRANSCRIPTS
        )
        self._tg: anyio.abc.TaskGroup | None = None

    def _now(self) -> float:
        return anyio.current_time() - self._t0

    # --- the whole ---------------------------------------------------------------------------

    async def run(self) -> BridgeResult:
        try:
            # The transcript hook runs outside the conversation's task group: when the call
            # ends it still gets the turns queued for it (bounded by close_timeout).
            async with anyio.create_task_group() as outer:
                if self.on_transcript is not None:
                    outer.start_soon(self._publish_loop)
                try:
                    await self._converse()
                finally:
                    self._transcripts_in.close()  # the hook drains what is queued, then ends
                    outer.cancel_scope.deadline = anyio.current_time() + self.close_timeout
        except BaseExceptionGroup as group:
            _raise_single(group)
        finally:
            self._transcripts_out.close()
            with anyio.move_on_after(self.close_timeout, shield=True) as scope:
                try:
                    await self.model.aclose()
                except Exception:
                    logger.warning(
                        "call %s: closing the model failed", self.call.call_id, exc_info=True
                    )
            if scope.cancelled_caught:
                logger.warning(
                    "call %s: the model session did not close within %g s; abandoned",
                    self.call.call_id,
                    self.close_timeout,
                )
        return BridgeResult(
            self.transcript.result(), self.stats, self.ended_by or "call", self.reason
        )

    async def _converse(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._watch_call)
                tg.start_soon(self._uplink)
                if self.answer:
                    tg.start_soon(self._answer)
                else:
                    self._answered_at = anyio.current_time()
                    self._answered.set()
                await self._open()
                tg.start_soon(self._player)
                if self.greeting is not None and self.greeting is not False:
                    text = self.greeting if isinstance(self.greeting, str) else None
                    try:
                        await self.model.respond(text or None)
                    except Exception as exc:
                        self._model_lost(f"the greeting failed: {type(exc).__name__}: {exc}")
                await self._read()
                if self.ended_by is None:
                    self.ended_by = "model"
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_single(group)

    async def _watch_call(self) -> None:
        reason = await self.call.wait_terminated()
        if self.ended_by is None:
            self.ended_by, self.reason = "call", reason
        logger.debug("call %s: ended (%s): the bridge stops", self.call.call_id, reason)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _answer(self) -> None:
        try:
            await self.call.answer()
        except WSSCallError as exc:
            if not _call_is_over(exc):
                raise
            return  # _watch_call ends the bridge
        self._answered_at = anyio.current_time()
        self._answered.set()

    async def _open(self) -> None:
        start = anyio.current_time()
        name = type(self.model).__name__
        try:
            with anyio.fail_after(self.open_timeout):
                await self.model.open(self.config)
        except TimeoutError as exc:
            raise ModelConnectError(
                f"{name}: the model session was not ready within {self.open_timeout:g} s"
            ) from exc
        except Exception as exc:
            raise ModelConnectError(f"{name}: could not open the model session: {exc}") from exc
        self.stats.model_connect_s = anyio.current_time() - start
        self._ready.set()

    def _model_lost(self, why: str) -> None:
        logger.warning("call %s: the model session ended: %s", self.call.call_id, why)
        if self.ended_by is None:
            self.ended_by, self.reason = "model", why
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    # --- caller → model ----------------------------------------------------------------------

    async def _uplink(self) -> None:
        up = _Converter(self.rate, self.model.input_rate)
        early: deque[bytes] = deque()
        early_bytes = 0
        try:
            async for chunk in self.call.audio_stream():
                if self.local_barge_in and self._speaking() and rms(chunk) >= LOCAL_BARGE_IN_RMS:
                    await self._barge_in("local VAD")
                pcm = up.process(chunk)
                if not pcm:
                    continue
                if not self._ready.is_set():  # the model is still connecting: keep the latest
                    early.append(pcm)
                    early_bytes += len(pcm)
                    while early_bytes > self.prebuffer_bytes:
                        early_bytes -= len(early.popleft())
                    continue
                while early:
                    first = early.popleft()
                    await self.model.send_audio(first)
                    self.stats.bytes_to_model += len(first)
                await self.model.send_audio(pcm)
                self.stats.bytes_to_model += len(pcm)
        except Exception as exc:
            self._model_lost(f"sending caller audio failed: {type(exc).__name__}: {exc}")

    # --- model → caller ----------------------------------------------------------------------

    async def _read(self) -> None:
        events: Any = None
        try:
            events = self.model.events()
            async for event in events:
                if await self._on_event(event):
                    return
        except Exception as exc:
            self._model_lost(f"{type(exc).__name__}: {exc}")
        finally:  # an async generator left suspended would be closed by the GC, too late
            aclose = getattr(events, "aclose", None) if events is not None else None
            if aclose is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
                    try:
                        await aclose()
                    except Exception:
                        logger.debug("closing the model's events failed", exc_info=True)

    async def _on_event(self, event: ModelEvent) -> bool:
        """Act on one model event; True when the conversation is over (a fatal error)."""
        match event:
            case AudioDelta():
                await self._audio(event)
            case GenerationDone(item_id=item):
                await self._generation_done(item)
            case SpeechStarted():
                await self._barge_in("the model heard the caller")
            case SpeechStopped():
                self._speech_stopped_at = anyio.current_time()
            case UserTranscript(text=text, final=final):
                turn = self.transcript.user_text(text, final, self._now())
                if turn is not None:
                    await self._published(turn)
            case AgentTranscript(text=text, item_id=item, final=final):
                if item not in self._dropped:
                    self.transcript.agent_text(item, text, final, self._now())
            case ToolCalls(calls=calls):
                assert self._tg is not None
                self._tg.start_soon(self._run_tools, calls)
            case ToolCallsCancelled(ids=ids):
                for id_ in ids:
                    scope = self._tool_scopes.get(id_)
                    if scope is not None:
                        scope.cancel()
            case Usage(input_tokens=i, output_tokens=o):
                self.stats.input_tokens += i
                self.stats.output_tokens += o
            case SessionEnding(time_left_s=left):
                logger.info("call %s: the model's session ends in %s s", self.call.call_id, left)
            case SessionResumed():
                self.stats.resumptions += 1
            case ModelError(message=message, code=code, fatal=fatal):
                self.stats.model_errors += 1
                logger.warning(
                    "call %s: model error%s: %s",
                    self.call.call_id,
                    f" {code}" if code else "",
                    message,
                )
                if fatal:
                    self._model_lost(f"model error: {message}")
                    return True
            case TurnDone():
                pass
        return False

    async def _audio(self, event: AudioDelta) -> None:
        item = event.item_id
        if item in self._dropped:
            self.stats.late_deltas_dropped += 1
            return
        if item not in self._latency:
            self._new_item(item)
        elif item in self._generated:  # more of an answer after its end (a tool call within
            self._generated.discard(item)  # a turn): it is generating again
        if self._farewell_items is not None and not self._farewell_started.is_set():
            self._farewell_items.add(item)  # the first audio after end_call/transfer: goodbye
            self._farewell_started.set()
        pcm = event.pcm
        if self._carry:  # an odd byte of the last delta: whole samples only
            if self._carry_of == (item, event.rate):
                pcm = self._carry + pcm
            self._carry = b""  # never into another answer or rate: it would shift every sample
        if len(pcm) & 1:
            pcm, self._carry, self._carry_of = pcm[:-1], pcm[-1:], (item, event.rate)
        self.ledger.generated(item, len(pcm), event.rate)
        if self._down is None or self._down.from_rate != event.rate:
            tail = self._down.flush() if self._down is not None else b""
            if tail and self._open_items:
                await self.playlist.put(self._epoch, self._open_items[-1], tail)
            self._down = _Converter(event.rate, self.rate)
        pcm = self._down.process(pcm)
        if pcm:
            await self.playlist.put(self._epoch, item, pcm)

    def _new_item(self, item: str) -> None:
        now = anyio.current_time()
        latency = self._latency[item] = TurnLatency(item)
        if self._speech_stopped_at is not None:
            latency.received_s = now - self._speech_stopped_at
        self.stats.turns.append(latency)
        self._open_items.append(item)
        self.transcript.agent_started(item, self._now())

    async def _generation_done(self, item: str) -> None:
        self._carry = b""  # half a sample at the end of an answer: dropped
        if item in self._dropped or item in self._generated:
            return
        self._generated.add(item)
        if self._down is not None:
            tail = self._down.flush()  # the answer's last ~20 ms, held in the filter
            if tail:
                await self.playlist.put(self._epoch, item, tail)
        turn = self.transcript.agent_done(item, self._now())
        if turn is not None:
            await self._published(turn)
        if self._farewell_items is not None and item in self._farewell_items:
            self._farewell_generated.set()

    async def _player(self) -> None:
        # Nothing plays before the call is answered: a real server may drop early audio, and
        # a greeting generated while answering must be heard from its first word.
        await self._answered.wait()
        while True:
            epoch, item, pcm = await self.playlist.get()
            try:
                if epoch == self._epoch:  # else taken before a barge-in: stale
                    await self._play(item, pcm)
            finally:
                self.playlist.release()

    async def _play(self, item: str, pcm: bytes) -> None:
        call = self.call
        ahead = call.played_bytes + call.get_send_audio_buffer_size()
        start = self.ledger.handed(item, len(pcm), ahead + call.playout_pending_bytes)
        if start is not None:
            assert self._tg is not None
            self._tg.start_soon(self._first_played, item, start)
        with anyio.CancelScope() as self._send_scope:
            try:
                await call.send_audio(pcm, wait=True)
            except (BufferClosedError, WSSCallClosedError):
                pass  # the call ended: _watch_call stops everything
            else:
                self.stats.bytes_to_caller += len(pcm)
        self._send_scope = None

    async def _first_played(self, item: str, start: int) -> None:
        played = await self.call.wait_played_bytes(start + 2)
        if item in self._dropped:
            played = self._heard_when_dropped.get(item, 0) > 0
        if not played:
            return  # interrupted, or the call ended, before a byte of it played
        now = anyio.current_time()
        if self.stats.ttfa_s is None:
            self.stats.ttfa_s = now - (self._answered_at or self._t0)
        if self._speech_stopped_at is not None and item in self._latency:
            latency = self._latency[item]
            if latency.received_s is not None:
                latency.played_s = now - self._speech_stopped_at

    def _speaking(self) -> bool:
        call = self.call
        return bool(
            self.playlist.bytes
            or self._send_scope is not None
            or call.get_send_audio_buffer_size()
            or call.playout_pending_bytes
        )

    def _stale_items(self) -> list[str]:
        """Answers not yet wholly generated, or not yet wholly played (oldest first); forgets
        the others."""
        played, speaking = self.call.played_bytes, self._speaking()
        ledger = self.ledger
        self._open_items = [
            item
            for item in self._open_items
            if item not in self._generated
            or (speaking and ledger.heard_ms(item, played) < int(ledger.generated_ms(item)))
        ]
        return list(self._open_items)

    async def _barge_in(self, why: str) -> None:
        self.transcript.speech_started(self._now())
        if self._farewell_items is not None and not self.barge_in_farewell:
            return  # the farewell plays to its end (barge_in_farewell=False)
        stale = self._stale_items()
        speaking = self._speaking()
        if not stale and not speaking:
            return  # nothing is playing: no interruption
        # From here to the clear there is no checkpoint (see the module's invariants).
        played = self.call.played_bytes
        heard = {item: self.ledger.heard_ms(item, played) for item in stale}
        self._epoch += 1
        self.playlist.clear()
        if self._send_scope is not None:
            self._send_scope.cancel()
        self._dropped.update(stale)
        self._heard_when_dropped.update(heard)
        self._carry = b""
        self._open_items = []
        self._down = None  # nothing of this answer's filter state leaks into the next
        if self._farewell is not None:
            self._farewell.cancel()  # barge_in_farewell: the conversation goes on
            self._farewell_items = None
        logger.info("call %s: barge-in (%s): %s", self.call.call_id, why, heard or "-")
        if speaking:
            try:
                await self.call.clear_send_audio_buffer()
            except WSSCallError as exc:
                if not _call_is_over(exc):
                    logger.warning("call %s: interrupt failed: %s", self.call.call_id, exc)
        now = self._now()
        for item in stale:
            generated = self.ledger.generated_ms(item)
            self.stats.interruptions.append(Interruption(item, heard[item], now))
            turn = self.transcript.agent_interrupted(
                item, heard[item] / generated if generated else 0.0, now
            )
            if turn is not None:
                await self._published(turn)
            await self.model.interrupted(item, heard[item])

    # --- tools -------------------------------------------------------------------------------

    async def _run_tools(self, calls: tuple[ToolCall, ...]) -> None:
        farewell = next(
            (c for c in calls if (t := self.tools.get(c.name)) is not None and t.builtin), None
        )
        if farewell is not None and self._farewell is None:
            # Armed now, before the results go back: the goodbye may start right after them.
            self._farewell = anyio.CancelScope()
            self._farewell_items = set()
            self._farewell_started = anyio.Event()
            self._farewell_generated = anyio.Event()
        else:
            farewell = None
        results: list[ToolResult | None] = [None] * len(calls)
        async with anyio.create_task_group() as tg:
            for i, c in enumerate(calls):
                tg.start_soon(self._run_one, i, c, results)
        done = [r for r in results if r is not None]
        if done:
            try:
                await self.model.send_tool_results(done)
            except Exception as exc:
                self._model_lost(f"sending tool results failed: {type(exc).__name__}: {exc}")
                return
        if farewell is not None:
            builtin = self.tools[farewell.name].builtin
            assert self._tg is not None
            assert builtin is not None
            self._tg.start_soon(self._after_farewell, builtin, farewell)

    async def _run_one(self, i: int, c: ToolCall, results: list[ToolResult | None]) -> None:
        t = self.tools.get(c.name)
        start = anyio.current_time()
        with anyio.CancelScope() as scope:
            self._tool_scopes[c.id] = scope
            if t is not None and t.builtin == "end_call":
                output: Any = {"status": "ending", "note": "say goodbye: the call ends after it"}
            elif t is not None and t.builtin == "transfer":
                output = {"status": "transferring", "note": "tell the caller, then it happens"}
            else:
                output = await run_tool(t, c.name, c.arguments, self.call)
            results[i] = ToolResult(c.id, c.name, output)
        self._tool_scopes.pop(c.id, None)
        duration = anyio.current_time() - start
        if scope.cancelled_caught:
            logger.info("call %s: tool %s cancelled by the model", self.call.call_id, c.name)
            self.stats.tools.append(ToolRun(c.name, c.id, duration, "cancelled"))
            return
        failed = isinstance(output, dict) and "error" in output
        self.stats.tools.append(ToolRun(c.name, c.id, duration, "error" if failed else "ok"))

    async def _after_farewell(self, kind: str, c: ToolCall) -> None:
        """end_call / transfer: wait for the farewell to be generated and heard, then act.

        The waits are bounded and cancellable (a barge-in with ``barge_in_farewell`` disarms
        them); the action itself, once begun, is not: a hang-up is never left half done.
        """
        scope = self._farewell
        assert scope is not None
        with scope:
            with anyio.move_on_after(FAREWELL_START_S):
                await self._farewell_started.wait()
            if self._farewell_started.is_set():
                with anyio.move_on_after(self.farewell_timeout):
                    await self._farewell_generated.wait()
            with anyio.move_on_after(self.farewell_timeout):
                await self.playlist.empty()
                await self.call.wait_played()
        self._farewell = None
        self._farewell_items = None
        if scope.cancel_called:
            logger.info(
                "call %s: the caller talked over the farewell: %s disarmed", self.call.call_id, kind
            )
            return
        reason = str(c.arguments.get("reason") or kind)
        try:
            if kind == "end_call":
                self.ended_by, self.reason = "end_call", reason
                await self.call.disconnect()
            else:
                await self.call.connect()
                self.ended_by, self.reason = "transfer", reason
                await self.call.close()
        except WSSCallError as exc:
            if _call_is_over(exc):
                return
            logger.warning("call %s: %s failed: %s", self.call.call_id, kind, exc)
            if kind == "transfer":
                # Nobody answered: the conversation goes on (the model is not told: adapters
                # have no way to say so yet; the caller can ask again).
                self.ended_by = self.reason = None

    async def _published(self, turn: Turn) -> None:
        """Hand a finished turn to ``on_transcript``, in its own task: a slow hook never holds
        up the reader (audio, barge-in)."""
        if self.on_transcript is None:
            return
        try:  # a copy: the hook runs later, when the live turn may have changed
            self._transcripts_in.send_nowait(dataclasses.replace(turn))
        except anyio.WouldBlock:
            logger.warning(
                "call %s: on_transcript is %d turns behind: a turn not reported",
                self.call.call_id,
                MAX_PENDING_TRANSCRIPTS,
            )

    async def _publish_loop(self) -> None:
        async for turn in self._transcripts_out:
            await self._report(turn)

    async def _report(self, turn: Turn) -> None:
        assert self.on_transcript is not None
        try:
            out = self.on_transcript(turn)
            if inspect.isawaitable(out):
                await out
        except Exception:
            logger.exception("call %s: on_transcript raised", self.call.call_id)


def _raise_single(group: BaseExceptionGroup[BaseException]) -> None:
    """Re-raise the one real error of a task group (no exception group escapes the bridge)."""
    errors = [e for e in _leaves(group) if not isinstance(e, anyio.get_cancelled_exc_class())]
    if not errors:
        raise group
    if len(errors) > 1:
        for extra in errors[1:]:
            logger.error("bridge: a further error", exc_info=extra)
    raise errors[0]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def bridge(
    call: ActiveCall,
    model: ModelAdapter,
    *,
    instructions: str | None = None,
    tools: Sequence[Tool] = (),
    greeting: str | bool | None = None,
    voice: str | None = None,
    transcription: bool = True,
    answer: bool | None = None,
    prebuffer_s: float = 2.0,
    max_queued_s: float = 300.0,
    open_timeout: float = 10.0,
    close_timeout: float = 3.0,
    farewell_timeout: float = 15.0,
    barge_in_farewell: bool = False,
    local_barge_in: bool = False,
    on_transcript: Callable[[Turn], Awaitable[None] | None] | None = None,
) -> BridgeResult:
    """Run ``call`` against ``model`` until the call or the conversation ends.

    The model session is opened while the call is answered (``answer``: default, if the call
    is not answered yet); with ``greeting`` the model speaks first (``True``, or a text telling
    it what to say). ``tools`` are :func:`~telcoflow.bridge.tool` s and the built-ins
    :data:`~telcoflow.bridge.end_call` and :data:`~telcoflow.bridge.transfer`, which act once
    the farewell has been heard (the caller talking over it does not stop it unless
    ``barge_in_farewell``). ``local_barge_in`` also interrupts on the caller's energy while
    our playout runs behind the model's estimate. Returns when the call ends (or the model
    session does: the call is then still up). Raises :class:`ModelConnectError` if the
    session cannot be opened within ``open_timeout``.
    """
    if not isinstance(call, ActiveCall):
        raise TypeError(f"bridge() needs an ActiveCall, not {type(call).__name__}")
    for name in ("prebuffer_s", "max_queued_s", "open_timeout", "close_timeout"):
        value = locals()[name]
        if not value > 0:
            raise ValueError(f"bridge(): {name} must be positive, not {value!r}")
    tool_list = list(tools)
    names = [t.name for t in tool_list]
    if len(set(names)) != len(names):
        raise ValueError(f"bridge(): two tools share a name: {sorted(names)}")
    if answer is None:
        answer = call.state is CallState.PENDING
    config = SessionConfig(
        instructions=instructions,
        tools=tuple(t.spec for t in tool_list),
        voice=voice,
        transcription=transcription,
    )
    return await _Bridge(
        call,
        model,
        config,
        tool_list,
        greeting=greeting,
        answer=answer,
        prebuffer_s=prebuffer_s,
        max_queued_s=max_queued_s,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        farewell_timeout=farewell_timeout,
        barge_in_farewell=barge_in_farewell,
        local_barge_in=local_barge_in,
        on_transcript=on_transcript,
    ).run()
