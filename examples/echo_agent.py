"""Echo bot: answers every call and sends back what it hears, until the caller hangs up.

    python examples/echo_agent.py --demo                  # one simulated call, offline
    python examples/echo_agent.py --demo --backend trio   # the same agent on trio

Against a server (``telcoflow sandbox serve`` runs one; place calls with
``telcoflow sandbox call``):

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/echo_agent.py
"""

from __future__ import annotations

import logging
import sys

import _harness

from telcoflow.sandbox import CallSpec, Voice
from telcoflow_sdk import ActiveCall, BufferClosedError

log = logging.getLogger("echo")


async def agent(call: ActiveCall) -> None:
    """Answer, then echo every chunk; the audio stream ends when the call does."""
    await call.answer()
    log.info("%s: answered %s; echoing", call.call_id, call.caller_number)
    try:
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
    except BufferClosedError:
        pass  # the call ended between hearing a chunk and echoing it
    log.info("%s: call over (%s)", call.call_id, call.termination_reason)


# --- demo: one call, the caller speaks a 440 Hz tone and hangs up after 2 s ----------------------

CALLER_HZ = 440


async def demo(d: _harness.Demo) -> None:
    spec = CallSpec(caller=Voice.tone(CALLER_HZ), caller_hangup_after_s=2.0)
    sim = await d.call(spec, agent, "the caller hums 440 Hz and hangs up after 2 s")
    d.describe(sim, {CALLER_HZ: "the caller's voice"})
    echoed = d.heard_s(sim, "caller", CALLER_HZ)
    d.check("the caller heard its own voice echoed back", echoed >= 1.0, f"{echoed:.1f} s")
    d.check_commands(sim, ["call.answer"])
    d.check("the caller ended the call", sim.ended_reason == "caller_hangup", str(sim.ended_reason))
    print(f"Echo latency measured by the sandbox (ms): {sim.stats.latency()}\n")


if __name__ == "__main__":
    sys.exit(_harness.main(_harness.parser(__doc__).parse_args(), agent, demo))
