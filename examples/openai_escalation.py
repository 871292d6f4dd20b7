"""A support agent on OpenAI Realtime that hands the caller to a human with ``transfer``.

The model talks with the caller; when the caller is interrupted mid-answer the bridge cuts the
answer and truncates the model's record of it at what the caller heard; when the caller asks
for a person, the model says so and calls ``transfer``: once that sentence has been heard the
bridge rings the human (``call.connect``) and leaves the two together (``call.close``).

    python examples/openai_escalation.py --demo      # offline: sandbox + OpenAI stand-in

For real (needs ``pip install "telcoflow-anyio[openai]"``):

    OPENAI_API_KEY=... TELCOFLOW_BASE_URL=wss://... python examples/openai_escalation.py

In the demo, ``telcoflow.testing.openai_realtime.OpenAIRealtimeStandIn`` plays OpenAI: the
real ``openai`` client talks to it; its scripted model answers with tones, so the recordings
show which answer the caller heard.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import _harness

from telcoflow import audio
from telcoflow.bridge import bridge, transfer
from telcoflow.bridge.openai import OpenAIRealtimeAdapter
from telcoflow.sandbox import CalleeSpec, CallSpec, Voice
from telcoflow.testing import Answer
from telcoflow_sdk import ActiveCall

log = logging.getLogger("support")

INSTRUCTIONS = (
    "You are the support line of Acme Broadband. Help with simple questions. If the caller "
    "asks for a person, or you cannot help, tell them you are putting them through and call "
    "transfer."
)

#: How the agent gets its model; the demo points it at the stand-in.
make_model: Callable[[], OpenAIRealtimeAdapter] = OpenAIRealtimeAdapter


async def agent(call: ActiveCall) -> None:
    result = await bridge(
        call, make_model(), instructions=INSTRUCTIONS, tools=[transfer], greeting=True
    )
    for turn in result.transcript:
        heard = f" (interrupted, {turn.heard_fraction:.0%} heard)" * turn.interrupted
        log.info("%s: %-5s %s%s", call.call_id, turn.role, turn.text or "...", heard)
    log.info("%s: over (%s: %s)", call.call_id, result.ended_by, result.reason)


# --- demo -----------------------------------------------------------------------------------------

CALLER_HZ, HELLO_HZ, ANSWER_HZ, THROUGH_HZ, HUMAN_HZ = 440, 550, 660, 770, 880
TONES = {
    CALLER_HZ: "the caller",
    HELLO_HZ: "hello",
    ANSWER_HZ: "long answer",
    THROUGH_HZ: "putting you through",
    HUMAN_HZ: "the human",
}
SCRIPT = (
    Answer(HELLO_HZ, 1.0, "Acme Broadband, how can I help?"),
    Answer(ANSWER_HZ, 3.0, "Have you tried turning the router off and on again, and then..."),
    Answer(
        THROUGH_HZ,
        1.0,
        "Of course, I'm putting you through to a colleague.",
        tool=("transfer", {"reason": "the caller asked for a person"}),
    ),
)


def caller(rate: int) -> Voice:
    """Listens to the hello, asks, talks over the long answer (asks for a person), listens."""

    def talk(s: float) -> bytes:
        return audio.tone(CALLER_HZ, s, rate)

    def quiet(s: float) -> bytes:
        return audio.silence(s, rate)

    pcm = quiet(1.5) + talk(0.5) + quiet(1.3) + talk(0.6) + quiet(8)
    return Voice.from_wav(audio.write_wav(None, pcm, rate), loop=False)


async def demo(d: _harness.Demo) -> None:
    global make_model
    from openai import AsyncOpenAI

    from telcoflow.testing.openai_realtime import OpenAIRealtimeStandIn

    async with OpenAIRealtimeStandIn(script=SCRIPT) as openai:
        client = AsyncOpenAI(api_key=openai.api_key, base_url=openai.base_url)
        make_model = lambda: OpenAIRealtimeAdapter(client)  # noqa: E731
        spec = CallSpec(caller=caller(d.rate), callee=CalleeSpec(answer_after_s=0.5))
        sim = await d.call(spec, agent, "asks for a person mid-answer", talk_s=1.0)
        session = openai.sessions[0]
        await client.close()
    d.describe(sim, TONES, {"callee": "human"})
    d.check_commands(sim, ["call.answer", "agent.interrupt", "call.connect", "call.close"])
    long_heard = d.heard_s(sim, "caller", ANSWER_HZ)
    d.check(
        "the long answer stopped when the caller talked over it",
        long_heard < 2.0,
        f"{long_heard:.1f} of 3.0 s",
    )
    truncated = [t.audio_end_ms for t in session.truncations]
    d.check(
        "OpenAI's record of it was cut at what the caller heard",
        len(truncated) == 1 and abs(truncated[0] - 1000 * long_heard) <= 250,
        f"truncated at {truncated} ms, the recording shows {1000 * long_heard:.0f} ms",
    )
    through = d.heard_s(sim, "caller", THROUGH_HZ)
    d.check(
        "'putting you through' was heard in full before the ringing",
        through >= 0.9,
        f"{through:.1f} s",
    )
    human = d.heard_s(sim, "caller", HUMAN_HZ, d.left_at(sim))
    d.check("the caller and the human talked after the agent left", human >= 0.5, f"{human:.1f} s")


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__, backend=False).parse_args(), agent, demo))
