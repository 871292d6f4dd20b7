"""Bridge a call to a realtime voice model, with barge-in: ``telcoflow.bridge`` on any backend.

:func:`telcoflow.bridge.bridge` runs the call against a model adapter: caller audio to the
model, the model's answers to the caller, barge-in in one step (the interrupted answer stops at
once and nothing of it plays on), the transcript and latency figures. :class:`ScriptedModel`
is an offline model that hears speech by its energy and answers each turn with a tone,
generated faster than real time as real models do; it runs on asyncio and trio. For real
models see ``gemini_receptionist.py`` and ``openai_escalation.py``.

    python examples/realtime_bridge.py --demo [--backend trio]

Against a server:

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/realtime_bridge.py
"""

from __future__ import annotations

import logging
import sys

import _harness

from telcoflow import audio
from telcoflow.bridge import ScriptedModel, bridge
from telcoflow.sandbox import CallSpec, Voice
from telcoflow.testing import Answer
from telcoflow_sdk import ActiveCall

log = logging.getLogger("bridge")

#: How long each answer is.
ANSWER_S = 1.0


async def agent(call: ActiveCall) -> None:
    log.info("%s: bridging to the model", call.call_id)
    model = ScriptedModel([Answer(FIRST_HZ, ANSWER_S), Answer(SECOND_HZ, ANSWER_S)])
    result = await bridge(call, model)  # answers the call while the model connects
    for i in result.stats.interruptions:
        log.info(
            "%s: the caller talked over %s after %d ms of it", call.call_id, i.item_id, i.heard_ms
        )
    log.info("%s: call over (%s)", call.call_id, result.reason)


# --- demo: the caller speaks, talks over the first answer, then listens to the second -------------

CALLER_HZ, FIRST_HZ, SECOND_HZ = 440, 660, 770
TONES = {CALLER_HZ: "the caller", FIRST_HZ: "1st answer", SECOND_HZ: "2nd answer"}


def caller_script(rate: int) -> Voice:
    """Speaks 0.5 s, waits 0.7 s (the answer starts), talks over it for 0.4 s, then listens."""

    def speech(s: float) -> bytes:
        return audio.tone(CALLER_HZ, s, rate)

    def quiet(s: float) -> bytes:
        return audio.silence(s, rate)

    pcm = speech(0.5) + quiet(0.7) + speech(0.4) + quiet(2.0)
    return Voice.from_wav(audio.write_wav(None, pcm, rate), loop=False)


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
