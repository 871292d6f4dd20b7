"""The scripted model behind every stand-in: hears by energy, answers with tones, no I/O.

One engine, several faces: the in-process :class:`~telcoflow.bridge.ScriptedModel` and the
Gemini Live and OpenAI Realtime stand-in servers all drive a :class:`ScriptedConversation`,
so a scenario behaves the same through any of them and only the wire differs. Time is passed
in (``now``, in seconds on any monotonic clock) so the engine can be tested without one.

Invariants:

- a turn is speech (RMS at least ``speech_rms``) followed by ``end_of_turn_s`` of quiet;
  :meth:`ScriptedConversation.hear` reports each start and stop exactly once;
- answers follow the script in order (cycling), each a tone of its own frequency, so the
  caller's recording shows which answer was heard; an answer may first call a tool;
- an answer counts as *playing* from its first chunk until the audio handed out so far would
  have finished at real time (the estimate a real server makes); speech that starts while an
  answer is generating or playing interrupts it, exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..audio import _rms, _sine

__all__ = ["Answer", "Response", "ScriptedConversation", "tone16"]

SPEECH_RMS = 0.02
END_OF_TURN_S = 0.3
TONE_AMPLITUDE = 0.25


def tone16(hz: float, seconds: float, rate: int, amplitude: float = TONE_AMPLITUDE) -> bytes:
    """A sine tone as PCM16 mono, unchecked (a scripted answer may ask any frequency):
    :func:`telcoflow.audio.tone`'s samples, which need no numpy either."""
    return _sine(hz, round(seconds * rate), rate, amplitude)


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a tone of ``hz`` for ``seconds`` with ``text`` as its transcript.

    With ``tool`` (a name and its arguments) the model first calls that tool and speaks once
    the result is back.
    """

    hz: float = 660.0
    seconds: float = 1.0
    text: str = "Here is my answer."
    tool: tuple[str, Mapping[str, Any]] | None = None


DEFAULT_SCRIPT = (Answer(660.0, 1.0, "First answer."), Answer(770.0, 1.0, "Second answer."))


@dataclass
class Response:
    """One answer being given: its audio in chunks, what has been handed out, and its state."""

    id: str
    answer: Answer
    rate: int
    chunks: list[bytes]
    sent: int = 0
    started_at: float | None = None
    sent_bytes: int = 0
    interrupted: bool = False
    done: bool = False

    def next_chunk(self, now: float) -> bytes | None:
        """The next chunk to send, or None when all are out."""
        if self.sent >= len(self.chunks):
            return None
        if self.started_at is None:
            self.started_at = now
        chunk = self.chunks[self.sent]
        self.sent += 1
        self.sent_bytes += len(chunk)
        return chunk

    @property
    def generated(self) -> bool:
        return self.sent >= len(self.chunks)

    @property
    def sent_ms(self) -> int:
        """Milliseconds of audio handed out so far (what a truncation may not exceed)."""
        return self.sent_bytes * 1000 // (2 * self.rate)

    def playback_end(self) -> float | None:
        """When the audio handed out so far would have finished playing at real time."""
        if self.started_at is None:
            return None
        return self.started_at + self.sent_bytes / (2 * self.rate)


@dataclass
class ScriptedConversation:
    """Energy VAD on the caller's audio and a script of answers (see the module's invariants)."""

    script: Sequence[Answer] = DEFAULT_SCRIPT
    out_rate: int = 24000
    chunk_ms: int = 40
    speech_rms: float = SPEECH_RMS
    end_of_turn_s: float = END_OF_TURN_S
    #: Everything heard, per rate it was declared at: tests check what the model got.
    heard: dict[int, bytearray] = field(default_factory=dict)
    turns: int = 0
    interruptions: int = 0
    _talking: bool = False
    _quiet_s: float = 0.0
    _answered: int = 0
    _responses: int = 0
    current: Response | None = None

    def hear(self, pcm: bytes, rate: int) -> list[Literal["speech_started", "speech_stopped"]]:
        """Feed caller audio at ``rate``; returns the turn edges it completes."""
        self.heard.setdefault(rate, bytearray()).extend(pcm)
        edges: list[Literal["speech_started", "speech_stopped"]] = []
        # A client may send an odd byte (the wire carries any bytes); it is measured without it.
        if _rms(pcm[: len(pcm) & ~1]) >= self.speech_rms:
            self._quiet_s = 0.0
            if not self._talking:
                self._talking = True
                edges.append("speech_started")
        elif self._talking:
            self._quiet_s += len(pcm) / 2 / rate
            if self._quiet_s >= self.end_of_turn_s:
                self._talking = False
                self.turns += 1
                edges.append("speech_stopped")
        return edges

    @property
    def talking(self) -> bool:
        return self._talking

    def peek_answer(self) -> Answer:
        """The script's next answer, without taking it."""
        return self.script[self._answered % len(self.script)]

    def take_answer(self) -> Answer:
        """Take the script's next answer (to call its tool first, say)."""
        answer = self.peek_answer()
        self._answered += 1
        return answer

    def start_response(self, answer: Answer | None = None) -> Response:
        """Begin the script's next answer as the current response; an explicit ``answer``
        (one taken with :meth:`take_answer`, say) does not move the script on."""
        if answer is None:
            answer = self.take_answer()
        self._responses += 1
        pcm = tone16(answer.hz, answer.seconds, self.out_rate)
        size = 2 * self.out_rate * self.chunk_ms // 1000
        chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
        self.current = Response(f"item_{self._responses}", answer, self.out_rate, chunks)
        return self.current

    def playing(self, now: float) -> bool:
        """Whether the current answer is generating or (by the estimate) still playing."""
        r = self.current
        if r is None or r.interrupted:
            return False
        if not r.generated:
            return True
        end = r.playback_end()
        return end is not None and now < end

    def interrupt(self, now: float) -> Response | None:
        """The caller started talking: the answer that was playing, now interrupted, if any."""
        if not self.playing(now):
            return None
        assert self.current is not None
        self.current.interrupted = True
        self.interruptions += 1
        return self.current
