"""A restaurant receptionist on Gemini Live: it greets the caller, looks bookings up with a
tool, says goodbye and hangs up once the goodbye has been heard.

The agent is a few lines around :func:`telcoflow.bridge.bridge`, which does the phone-side
work: resampling (8/16/24 kHz calls, Gemini hears 16 kHz), barge-in, the greeting while the
call is answered, the tool in its own task, ``end_call`` after the farewell, session
resumption when Gemini's connection limit comes, the transcript.

    python examples/gemini_receptionist.py --demo      # offline: sandbox + Gemini stand-in

For real (needs ``pip install "telcoflow-anyio[gemini]"``):

    GEMINI_API_KEY=... TELCOFLOW_BASE_URL=wss://... python examples/gemini_receptionist.py

In the demo, ``telcoflow.testing.gemini_live.GeminiLiveStandIn`` plays Gemini: the real
google-genai client talks to it over TLS; its scripted model answers with tones, so the
recordings show which answer the caller heard.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import _harness

from telcoflow import audio
from telcoflow.bridge import BridgeResult, bridge, end_call, tool
from telcoflow.bridge.gemini import GeminiLiveAdapter
from telcoflow.sandbox import CallSpec, Voice
from telcoflow.testing import Answer
from telcoflow_sdk import ActiveCall

log = logging.getLogger("receptionist")

INSTRUCTIONS = (
    "You are the receptionist of Trattoria Lina. Greet the caller warmly. When they ask about "
    "a booking, look it up with find_booking. When they are done, say goodbye and call "
    "end_call."
)
BOOKINGS = {"ada": "a table for 2 on Friday at 19:00"}


@tool
async def find_booking(name: str) -> dict[str, str]:
    """Look up a booking by the guest's name."""
    booking = BOOKINGS.get(name.strip().lower())
    log.info("find_booking(%r) -> %s", name, booking or "none")
    return {"booking": booking} if booking else {"error": f"no booking under {name!r}"}


#: How the agent gets its model; the demo points it at the stand-in.
make_model: Callable[[], GeminiLiveAdapter] = GeminiLiveAdapter


def log_transcript(call: ActiveCall, result: BridgeResult) -> None:
    for turn in result.transcript:
        cut = " (interrupted)" * turn.interrupted
        log.info("%s: %-5s %s%s", call.call_id, turn.role, turn.text or "...", cut)
    s = result.stats
    log.info(
        "%s: over (%s, %s); first audio after %.0f ms, %d tool call(s)",
        call.call_id,
        result.ended_by,
        result.reason,
        1000 * (s.ttfa_s or 0),
        len(s.tools),
    )


async def agent(call: ActiveCall) -> None:
    result = await bridge(
        call,
        make_model(),
        instructions=INSTRUCTIONS,
        tools=[find_booking, end_call],
        greeting="Greet the caller.",
    )
    log_transcript(call, result)


# --- demo -----------------------------------------------------------------------------------------

CALLER_HZ, GREETING_HZ, ANSWER_HZ, GOODBYE_HZ = 440, 550, 660, 880
TONES = {
    CALLER_HZ: "the caller",
    GREETING_HZ: "greeting",
    ANSWER_HZ: "booking",
    GOODBYE_HZ: "goodbye",
}
SCRIPT = (
    Answer(GREETING_HZ, 1.0, "Trattoria Lina, good evening! How can I help?"),
    Answer(
        ANSWER_HZ,
        1.2,
        "Ada, you have a table for two on Friday at seven.",
        tool=("find_booking", {"name": "Ada"}),
    ),
    Answer(
        GOODBYE_HZ,
        1.0,
        "You're welcome, see you Friday. Goodbye!",
        tool=("end_call", {"reason": "the caller has what they needed"}),
    ),
)


def caller(rate: int) -> Voice:
    """Listens to the greeting, asks about the booking, listens, says thanks, listens."""

    def talk(s: float) -> bytes:
        return audio.tone(CALLER_HZ, s, rate)

    def quiet(s: float) -> bytes:
        return audio.silence(s, rate)

    return Voice.from_wav(
        audio.write_wav(None, quiet(1.6) + talk(0.5) + quiet(2.4) + talk(0.4) + quiet(5), rate)
    )


async def demo(d: _harness.Demo) -> None:
    global make_model
    from telcoflow.testing.gemini_live import GeminiLiveStandIn

    async with GeminiLiveStandIn(script=SCRIPT) as gemini:
        make_model = lambda: GeminiLiveAdapter(gemini.client())  # noqa: E731
        sim = await d.call(CallSpec(caller=caller(d.rate)), agent, "asks about a booking")
        connection = gemini.connections[0]
    d.describe(sim, TONES)
    d.check_commands(sim, ["call.answer", "call.disconnect"], "the receptionist")
    answered = [f["name"] for r in connection.tool_responses for f in r["functionResponses"]]
    d.check("the tools' results went back to Gemini", len(answered) == 2, ", ".join(answered))
    d.check(
        "Gemini heard the caller at 16 kHz",
        set(connection.audio_rates) == {16000},
        str(sorted(set(connection.audio_rates))),
    )
    greeting = d.heard_s(sim, "caller", GREETING_HZ)
    d.check("the caller heard the greeting first", greeting >= 0.9, f"{greeting:.1f} s")
    answer = d.heard_s(sim, "caller", ANSWER_HZ)
    d.check("the caller heard the booking, looked up by the tool", answer >= 1.1, f"{answer:.1f} s")
    goodbye = d.heard_s(sim, "caller", GOODBYE_HZ)
    d.check("the goodbye was heard in full before the hang-up", goodbye >= 0.9, f"{goodbye:.1f} s")
    d.check(
        "the receptionist hung up", sim.ended_reason == "agent_disconnect", str(sim.ended_reason)
    )


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__, backend=False).parse_args(), agent, demo))
