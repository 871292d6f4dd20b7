"""``ScriptedModel``: a voice model with no network, for tests and demos on asyncio and trio.

It drives the same :class:`~telcoflow.testing._engine.ScriptedConversation` as the Gemini and
OpenAI stand-in servers (energy VAD, one tone per answer, tools from the script), in process:
so a bridge scenario can be proved on both backends without a model library, and then again
over each model's real wire. It behaves as a server-VAD model does: it reports the caller's
speech (``SpeechStarted``, ``SpeechStopped``), answers each turn at ``pace`` times real time,
stops an answer the caller talks over, and keeps a record of what it was told (truncations,
tool results, greetings) for assertions. An ``interrupted`` call with more heard time than
was generated is recorded in :attr:`ScriptedModel.errors`, as a real server would refuse it.

Invariants: :meth:`ScriptedModel.events` runs no task of its own (it interleaves reading the
caller's turn edges with the answer's pacing), so closing the bridge's task group leaves
nothing behind; events end once :meth:`aclose` is called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from ..testing._engine import DEFAULT_SCRIPT, Answer, Response, ScriptedConversation
from ._adapter import SessionConfig, ToolResult
from ._events import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelEvent,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCalls,
    TurnDone,
    Usage,
    UserTranscript,
)

__all__ = ["Answer", "ScriptedModel"]


class ScriptedModel:
    """An in-process model answering from a script (see the module docstring)."""

    can_truncate = True

    def __init__(
        self,
        script: Sequence[Answer] = DEFAULT_SCRIPT,
        *,
        input_rate: int = 16000,
        output_rate: int = 24000,
        pace: float = 2.0,
        chunk_ms: int = 40,
        connect_delay_s: float = 0.0,
        late_deltas: int = 0,
        report_speech: bool = True,
    ) -> None:
        if pace <= 0:
            raise ValueError(f"pace must be positive, not {pace!r}")
        self.input_rate = input_rate
        self.conversation = ScriptedConversation(script, out_rate=output_rate, chunk_ms=chunk_ms)
        self.pace = pace
        self.connect_delay_s = connect_delay_s
        self.late_deltas = late_deltas
        #: False: a model whose playout estimate ran out, that stops its answer but does not
        #: say the caller interrupted (what the bridge's ``local_barge_in`` is for).
        self.report_speech = report_speech
        self.config: SessionConfig | None = None
        #: (item_id, heard_ms) of every interruption the bridge reported.
        self.truncations: list[tuple[str, int]] = []
        self.tool_results: list[ToolResult] = []
        self.greetings: list[str | None] = []
        self.errors: list[str] = []
        self.opened = anyio.Event()
        self.closed = anyio.Event()
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](1000)
        self._pending_tool: Answer | None = None
        self._calls = 0
        self._late: tuple[Response, int] | None = None

    # --- the adapter interface ---------------------------------------------------------------

    async def open(self, config: SessionConfig) -> None:
        if self.connect_delay_s:
            await anyio.sleep(self.connect_delay_s)
        self.config = config
        self.opened.set()

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed.is_set():
            raise anyio.ClosedResourceError("the scripted model's session is closed")
        for edge in self.conversation.hear(pcm, self.input_rate):
            await self._send.send((edge, None))

    async def respond(self, instructions: str | None = None) -> None:
        self.greetings.append(instructions)
        await self._send.send(("respond", instructions))

    async def interrupted(self, item_id: str | None, heard_ms: int) -> None:
        self.truncations.append((item_id or "", heard_ms))
        r = self.conversation.current
        if r is not None and r.id == item_id and heard_ms > r.sent_ms:
            self.errors.append(
                f"Audio content of {r.sent_ms}ms is already shorter than {heard_ms}ms"
            )

    async def send_tool_results(self, results: Sequence[ToolResult]) -> None:
        self.tool_results.extend(results)
        await self._send.send(("tool_results", list(results)))

    async def aclose(self) -> None:
        self.closed.set()
        self._send.close()
        self._receive.close()

    # --- the conversation --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ModelEvent]:
        conv = self.conversation
        chunk_s = conv.chunk_ms / 1000 / self.pace
        while not self.closed.is_set():
            r = conv.current
            speaking = r is not None and not r.interrupted and not r.generated
            edge: tuple[str, Any] | None = None
            try:
                if speaking or self._late is not None:
                    with anyio.move_on_after(chunk_s):
                        edge = await self._receive.receive()
                else:
                    edge = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if edge is None:
                for event in self._next_chunk():
                    yield event
                continue
            for event in self._on_edge(*edge):
                yield event

    def _next_chunk(self) -> list[ModelEvent]:
        if self._late is not None:  # deltas a real server sends after it was interrupted
            stale, left = self._late
            self._late = (stale, left - 1) if left > 1 else None
            return [AudioDelta(stale.chunks[0], stale.rate, stale.id)]
        r = self.conversation.current
        assert r is not None
        chunk = r.next_chunk(anyio.current_time())
        out: list[ModelEvent] = []
        if chunk is not None:
            out.append(AudioDelta(chunk, r.rate, r.id))
        if r.generated:
            r.done = True
            out += [
                AgentTranscript(r.answer.text, r.id, final=True),
                GenerationDone(r.id),
                TurnDone(),
                Usage(input_tokens=10, output_tokens=len(r.chunks)),
            ]
        return out

    def _on_edge(self, kind: str, value: Any) -> list[ModelEvent]:
        conv = self.conversation
        now = anyio.current_time()
        if kind == "speech_started":
            r = conv.interrupt(now)
            if r is not None and self.late_deltas:
                self._late = (r, self.late_deltas)
            return [SpeechStarted()] if self.report_speech else []
        if kind == "speech_stopped":
            out: list[ModelEvent] = [SpeechStopped(), UserTranscript(f"turn {conv.turns}", True)]
            return out + self._answer()
        if kind == "respond":
            return self._answer()
        if kind == "tool_results" and self._pending_tool is not None:
            answer, self._pending_tool = self._pending_tool, None
            conv.start_response(Answer(answer.hz, answer.seconds, answer.text))
            return []
        return []

    def _answer(self) -> list[ModelEvent]:
        conv = self.conversation
        if conv.peek_answer().tool is None:
            conv.start_response()
            return []
        answer = conv.take_answer()
        assert answer.tool is not None
        name, args = answer.tool
        self._pending_tool = answer
        self._calls += 1
        return [ToolCalls((ToolCall(f"call_{self._calls}", name, dict(args)),))]
