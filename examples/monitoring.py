"""Call monitoring: a supervisor puts the caller through to a human operator, listens in
silently (spy), coaches the operator where the caller cannot hear it (whisper), joins the
conversation (barge), then leaves the two talking (close).

    python examples/monitoring.py --demo

Against a server:

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/monitoring.py
"""

from __future__ import annotations

import logging
import sys

import _harness
import anyio

from telcoflow import audio
from telcoflow.sandbox import CalleeSpec, CallSpec, Voice
from telcoflow_sdk import ActiveCall

log = logging.getLogger("monitoring")

#: The supervisor's "voice": a coaching hint for the operator, an announcement for both.
COACH_HZ, ANNOUNCE_HZ = 1000, 1200
RING_TIME_S = 20


async def say(call: ActiveCall, hz: int, seconds: float) -> None:
    await call.send_audio(audio.tone(hz, seconds, call.sample_rate))
    await call.wait_played()


async def listen(call: ActiveCall, seconds: float) -> bytes:
    """What the supervisor hears (caller and operator, mixed) for ``seconds``."""
    heard = bytearray()
    with anyio.move_on_after(seconds):
        async for chunk in call.audio_stream():
            heard += chunk
    return bytes(heard)


async def supervisor(call: ActiveCall) -> None:
    # Connecting without answering first: the caller goes straight to the operator (the
    # callee), and the supervisor stays on the line in barge mode.
    await call.connect(ring_time_seconds=RING_TIME_S)
    log.info("%s: caller put through; supervisor in %s mode", call.call_id, call.agent_mode)

    await call.spy()  # nobody hears the supervisor; it hears both
    heard = await listen(call, 0.6)
    seconds = len(heard) / 2 / call.sample_rate
    log.info(
        "%s: spy: listened in for %.1f s (level %.2f)", call.call_id, seconds, audio.rms(heard)
    )

    await call.whisper()  # only the operator (callee) hears the supervisor
    await say(call, COACH_HZ, 0.5)
    log.info("%s: whisper: coached the operator", call.call_id)

    await call.barge()  # caller and operator both hear the supervisor
    await say(call, ANNOUNCE_HZ, 0.4)
    log.info("%s: barge: spoke to both; leaving", call.call_id)

    await call.close()  # caller and operator stay connected


# --- demo: one call; the caller hums 440 Hz, the operator 880 Hz ---------------------------------

CALLER_HZ, OPERATOR_HZ = 440, 880
TONES = {
    CALLER_HZ: "the caller",
    OPERATOR_HZ: "the operator",
    COACH_HZ: "coaching",
    ANNOUNCE_HZ: "announcement",
}
NAMES = {"callee": "operator", "agent": "supervisor"}


async def demo(d: _harness.Demo) -> None:
    spec = CallSpec(
        caller=Voice.tone(CALLER_HZ),
        callee=CalleeSpec(answer_after_s=0.3, voice=Voice.tone(OPERATOR_HZ)),
    )
    sim = await d.call(spec, supervisor, "the operator answers after 0.3 s")
    d.describe(sim, TONES, NAMES)
    d.check_commands(
        sim,
        ["call.connect", "agent.spy", "agent.whisper", "agent.barge", "call.close"],
        "the supervisor",
    )
    coaching = d.spans(sim, "callee", COACH_HZ)
    spy_end = coaching[0][0] if coaching else 0.0  # spying lasted until the coaching began
    d.check(
        "spy: the supervisor heard both the caller and the operator",
        d.heard_s(sim, "agent", CALLER_HZ, 0, spy_end) >= 0.4
        and d.heard_s(sim, "agent", OPERATOR_HZ, 0, spy_end) >= 0.4,
    )
    d.check(
        "whisper: only the operator heard the coaching",
        d.heard_s(sim, "callee", COACH_HZ) >= 0.4 and not d.spans(sim, "caller", COACH_HZ),
        f"operator {d.heard_s(sim, 'callee', COACH_HZ):.1f} s, "
        f"caller {d.heard_s(sim, 'caller', COACH_HZ):.1f} s",
    )
    d.check(
        "barge: the caller and the operator both heard the announcement",
        d.heard_s(sim, "callee", ANNOUNCE_HZ) >= 0.3
        and d.heard_s(sim, "caller", ANNOUNCE_HZ) >= 0.3,
    )
    left = d.left_at(sim)
    d.check(
        "close: the caller and the operator talked on after the supervisor left",
        d.heard_s(sim, "caller", OPERATOR_HZ, left) >= 0.3
        and d.heard_s(sim, "callee", CALLER_HZ, left) >= 0.3,
    )


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__).parse_args(), supervisor, demo))
