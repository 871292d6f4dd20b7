"""Human escalation: the bot talks with the caller, decides a human should take over, rings one
and leaves the two together; when nobody picks up, it apologises and hangs up.

    python examples/escalation.py --demo     # four simulated calls at once, one per outcome

Against a server:

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/escalation.py
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import _harness
import anyio

from telcoflow import audio
from telcoflow.sandbox import CalleeSpec, CallSpec, Voice
from telcoflow_sdk import ActiveCall, WSSCallCommandError

log = logging.getLogger("escalation")

#: The bot's "sentences": tones standing in for synthesised speech.
HELLO_HZ, HOLD_HZ, SORRY_HZ, BYE_HZ = 520, 600, 350, 700
#: Chunks louder than this (RMS, 0..1 of full scale) count as the caller speaking.
SPEECH_RMS = 0.02
#: Why connect() can fail and the bot should still look after the caller.
NOBODY_ANSWERED = {"CALL_UNANSWERED", "CALL_REJECTED"}


async def say(call: ActiveCall, hz: int, seconds: float) -> None:
    """Say a "sentence" and wait until the caller has heard all of it."""
    await call.send_audio(audio.tone(hz, seconds, call.sample_rate))
    await call.wait_played()


async def listen(call: ActiveCall, seconds: float) -> float:
    """Listen for ``seconds``; how long the caller spoke meanwhile."""
    spoke = 0.0
    with anyio.move_on_after(seconds):
        async for chunk in call.audio_stream():
            if audio.rms(chunk) >= SPEECH_RMS:
                spoke += len(chunk) / 2 / call.sample_rate
    return spoke


def needs_a_human(spoke_s: float) -> bool:
    """Stand-in for the real decision: a model's tool call, a keyword, the caller's mood."""
    return spoke_s >= 0.3


@dataclass
class Escalation:
    """The agent; ``ring_time_seconds`` is how long a human gets to pick up."""

    ring_time_seconds: int = 20

    async def __call__(self, call: ActiveCall) -> None:
        await call.answer()
        await say(call, HELLO_HZ, 0.5)  # "Hello, how can I help?"
        spoke = await listen(call, 0.6)
        if not needs_a_human(spoke):
            log.info("%s: the bot can handle this (caller spoke %.1f s)", call.call_id, spoke)
            await say(call, BYE_HZ, 0.3)
            await call.disconnect()
            return
        log.info("%s: caller spoke %.1f s: escalating to a human", call.call_id, spoke)
        await say(call, HOLD_HZ, 0.4)  # "Let me put you through to a colleague"
        try:
            await call.connect(ring_time_seconds=self.ring_time_seconds)
        except WSSCallCommandError as exc:
            if exc.error_code not in NOBODY_ANSWERED:
                raise
            log.info("%s: %s; apologising and hanging up", call.call_id, exc.error_code)
            await say(call, SORRY_HZ, 0.5)  # "Sorry, nobody is free; we will call you back"
            await call.disconnect()
            return
        log.info("%s: a human picked up; the bot leaves", call.call_id)
        await call.close()


# --- demo: four callers at once; the human answers, declines, never answers; a quiet caller -----

CALLER_HZ, HUMAN_HZ = 440, 880
TONES = {
    CALLER_HZ: "the caller",
    HUMAN_HZ: "the human",
    HELLO_HZ: "bot hello",
    HOLD_HZ: "bot hold",
    SORRY_HZ: "bot sorry",
    BYE_HZ: "bot bye",
}
HUMAN = Voice.tone(HUMAN_HZ)
CASES = {
    "answered": (CalleeSpec(answer_after_s=0.4, voice=HUMAN), "the human answers after 0.4 s"),
    "declined": (CalleeSpec(decline=True, voice=HUMAN), "the human declines"),
    "unanswered": (CalleeSpec(answer=False, voice=HUMAN), "the human never answers"),
    "quiet": (CalleeSpec(voice=HUMAN), "the caller says nothing"),
}
EXPECTED = {
    "answered": ["call.answer", "call.connect", "call.close"],
    "declined": ["call.answer", "call.connect CALL_REJECTED", "call.disconnect"],
    "unanswered": ["call.answer", "call.connect CALL_UNANSWERED", "call.disconnect"],
    "quiet": ["call.answer", "call.disconnect"],
}


async def demo(d: _harness.Demo) -> None:
    agent = Escalation(ring_time_seconds=1)
    sims = {}

    async def place(n: int, case: str) -> None:
        callee, note = CASES[case]
        voice = Voice.silence() if case == "quiet" else Voice.tone(CALLER_HZ)
        spec = CallSpec(from_number=f"+659000001{n}", caller=voice, callee=callee)
        sims[case] = await d.call(spec, agent, f"{case}: {note}")

    async with anyio.create_task_group() as tg:
        for n, case in enumerate(CASES):
            tg.start_soon(place, n, case)

    for case in CASES:
        d.describe(sims[case], TONES)
        d.check_commands(sims[case], EXPECTED[case], f"{case}: the bot")
    answered = sims["answered"]
    left = d.left_at(answered)
    d.check(
        "answered: caller and human talked on after the bot left",
        d.heard_s(answered, "caller", HUMAN_HZ, left) >= 0.3
        and d.heard_s(answered, "callee", CALLER_HZ, left) >= 0.3,
    )
    for case in ("declined", "unanswered"):
        sim = sims[case]
        d.check(
            f"{case}: the caller heard the apology, and the bot hung up",
            d.heard_s(sim, "caller", SORRY_HZ) >= 0.3 and sim.ended_reason == "agent_disconnect",
            f"{d.heard_s(sim, 'caller', SORRY_HZ):.1f} s of apology, {sim.ended_reason}",
        )
    d.check(
        "quiet: the bot said goodbye without ringing anyone",
        d.heard_s(sims["quiet"], "caller", BYE_HZ) >= 0.2
        and not d.heard_s(sims["quiet"], "caller", HOLD_HZ),
    )


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__).parse_args(), Escalation(), demo))
