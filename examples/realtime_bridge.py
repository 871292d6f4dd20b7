"""Bridge a call to a realtime voice model, with barge-in.

The model sits behind a small interface, :class:`VoiceModel`: caller audio in; events out
(:class:`AudioDelta`, :class:`SpeechStarted`, :class:`ResponseDone`), the shape of realtime
speech APIs. To use a real model, write an adapter with those three methods for its API.
:class:`ScriptedModel` is an offline stand-in: it hears speech by its energy and answers each
turn with a tone, generated faster than real time as real models do. When the caller talks over
an answer, the bridge drops what is queued (``call.clear_send_audio_buffer()``), so the
interrupted answer stops at once and never plays on.

    python examples/realtime_bridge.py --demo

Against a server:

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/realtime_bridge.py
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import _harness
import anyio

from telcoflow.sandbox import CallSpec, Voice, rms, tone_pcm, write_wav
from telcoflow_sdk import ActiveCall, BufferClosedError, WSSCallClosedError

log = logging.getLogger("bridge")


# --- the model interface --------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioDelta:
    """A piece of the model's spoken answer (PCM16 at the call's sample rate)."""

    pcm: bytes


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started talking: whatever the model was saying is now stale."""


@dataclass(frozen=True)
class ResponseDone:
    """The model has generated all of its answer (it may not have played yet)."""


ModelEvent: TypeAlias = AudioDelta | SpeechStarted | ResponseDone


class VoiceModel(Protocol):
    async def send_audio(self, pcm: bytes) -> None:
        """Caller audio, PCM16 at the call's sample rate."""

    def responses(self) -> AsyncIterator[ModelEvent]:
        """The model's events, in order; ends after :meth:`aclose`."""

    async def aclose(self) -> None:
        """No more audio is coming: the call is over."""


# --- the bridge -----------------------------------------------------------------------------------


def speaking(call: ActiveCall) -> bool:
    """Whether audio the agent sent has not all been played yet."""
    return bool(call.get_send_audio_buffer_size() or call.playout_pending_bytes)


async def caller_to_model(call: ActiveCall, model: VoiceModel) -> None:
    try:
        async for chunk in call.audio_stream():
            await model.send_audio(chunk)
    finally:
        await model.aclose()  # the call ended: so do the model's responses


async def model_to_caller(call: ActiveCall, model: VoiceModel) -> None:
    try:
        async for event in model.responses():
            match event:
                case AudioDelta(pcm=pcm):
                    await call.send_audio(pcm, wait=True)
                case SpeechStarted() if speaking(call):
                    log.info("%s: the caller talks over the answer: interrupting", call.call_id)
                    await call.clear_send_audio_buffer()
                case ResponseDone():
                    log.info("%s: the model has generated its answer", call.call_id)
    except (BufferClosedError, WSSCallClosedError):
        pass  # the call ended in the middle of an answer


async def bridge(call: ActiveCall, model: VoiceModel) -> None:
    """Pump audio both ways, one task each, until the call ends."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(caller_to_model, call, model)
        await model_to_caller(call, model)


async def agent(call: ActiveCall) -> None:
    await call.answer()
    log.info("%s: answered; bridging to the model", call.call_id)
    await bridge(call, ScriptedModel(call.sample_rate))
    log.info("%s: call over (%s)", call.call_id, call.termination_reason)


# --- the stand-in model ---------------------------------------------------------------------------

#: Chunks louder than this (RMS, 0..1 of full scale) are speech.
SPEECH_RMS = 0.02
#: This much quiet after speech ends the caller's turn.
END_OF_TURN_S = 0.3
#: How long each answer is.
ANSWER_S = 1.0
#: Caller audio the model buffers (20 ms chunks) before send_audio waits.
MAX_PENDING_CHUNKS = 50


class ScriptedModel:
    """Hears the caller by energy and answers each turn with a tone ("speech") at twice real
    time; when the caller starts talking it says so and abandons the answer in progress. Each
    answer has the next tone of ``voices``, so that recordings show which answer was heard."""

    def __init__(self, sample_rate: int, voices: Sequence[int] = (660, 770)) -> None:
        self.sample_rate = sample_rate
        self.voices = voices
        self._send, self._receive = anyio.create_memory_object_stream[bytes](MAX_PENDING_CHUNKS)

    async def send_audio(self, pcm: bytes) -> None:
        await self._send.send(pcm)

    async def aclose(self) -> None:
        self._send.close()

    async def responses(self) -> AsyncIterator[ModelEvent]:
        rate, talking, quiet_s, answer, turns = self.sample_rate, False, 0.0, b"", 0
        try:
            async for chunk in self._receive:
                if rms(chunk) >= SPEECH_RMS:
                    quiet_s = 0.0
                    if not talking:
                        talking, answer = True, b""
                        yield SpeechStarted()
                elif talking:
                    quiet_s += len(chunk) / 2 / rate
                    if quiet_s >= END_OF_TURN_S:
                        talking = False
                        answer = tone_pcm(self.voices[turns % len(self.voices)], rate, ANSWER_S)
                        turns += 1
                if answer:  # two chunks of answer for each chunk heard: twice real time
                    delta, answer = answer[: 2 * len(chunk)], answer[2 * len(chunk) :]
                    yield AudioDelta(delta)
                    if not answer:
                        yield ResponseDone()
        finally:
            self._receive.close()


# --- demo: the caller speaks, talks over the first answer, then listens to the second -------------

CALLER_HZ, FIRST_HZ, SECOND_HZ = 440, 660, 770
TONES = {CALLER_HZ: "the caller", FIRST_HZ: "1st answer", SECOND_HZ: "2nd answer"}


def caller_script(rate: int) -> Voice:
    """Speaks 0.5 s, waits 0.7 s (the answer starts), talks over it for 0.4 s, then listens."""

    def speech(s: float) -> bytes:
        return tone_pcm(CALLER_HZ, rate, s)

    def quiet(s: float) -> bytes:
        return bytes(2 * int(rate * s))

    pcm = speech(0.5) + quiet(0.7) + speech(0.4) + quiet(2.0)
    return Voice.from_wav(write_wav(pcm, rate), loop=False)


async def demo(d: _harness.Demo) -> None:
    spec = CallSpec(caller=caller_script(d.rate), caller_hangup_after_s=3.5)
    sim = await d.call(spec, agent, "speaks, talks over the 1st answer, hears the 2nd")
    d.describe(sim, TONES)
    d.check_commands(sim, ["call.answer", "agent.interrupt"], "the bridge")
    turns = d.spans(sim, "agent", CALLER_HZ)
    barge_in = turns[1][0] if len(turns) == 2 else 0.0
    first = d.heard_s(sim, "caller", FIRST_HZ)
    after = d.heard_s(sim, "caller", FIRST_HZ, barge_in + 0.2)
    d.check(
        "the 1st answer stopped when the caller talked over it",
        0.2 <= first < ANSWER_S - 0.15 and after == 0,
        f"heard {first:.1f} of {ANSWER_S:g} s, {after:.1f} s after barge-in at {barge_in:.1f} s",
    )
    second = d.heard_s(sim, "caller", SECOND_HZ)
    d.check("the 2nd answer played in full", second >= ANSWER_S - 0.1, f"{second:.1f} s")
    d.check(
        "the bridge ended with the call", sim.ended_reason == "caller_hangup", str(sim.ended_reason)
    )


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__).parse_args(), agent, demo))
