"""A trio-native agent: ``trio.run``, a nursery with one task per call, ``trio.move_on_after`` for
timeouts; the SDK runs on trio as it is (through anyio), with no asyncio anywhere.

The agent greets the caller, listens for at most a few seconds, says goodbye and hangs up; if the
caller hangs up first, its task simply ends. Ctrl-C drains: no new calls, the active ones end.

    python examples/trio_agent.py --demo     # two simulated calls at once

Against a server:

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/trio_agent.py
"""

from __future__ import annotations

import logging
import signal
import sys

import _harness
import trio

from telcoflow import audio
from telcoflow.sandbox import CallSpec, Voice
from telcoflow_sdk import ActiveCall, CallState, TelcoflowClient, WSSCallClosedError

log = logging.getLogger("trio_agent")

GREETING_HZ, GOODBYE_HZ = 660, 520
#: How long the caller may speak before the agent wraps up.
LISTEN_S = 1.5
SPEECH_RMS = 0.02
#: On Ctrl-C, how long calls in progress get to end before the agent leaves them.
DRAIN_S = 30


async def agent(call: ActiveCall) -> None:
    await call.answer()
    await call.send_audio(audio.tone(GREETING_HZ, 0.4, call.sample_rate))
    spoke = 0.0
    with trio.move_on_after(LISTEN_S) as listening:
        async for chunk in call.audio_stream():
            if audio.rms(chunk) >= SPEECH_RMS:
                spoke += len(chunk) / 2 / call.sample_rate
    if not listening.cancelled_caught:  # the stream ended: the caller hung up
        log.info("%s: caller hung up after speaking %.1f s", call.call_id, spoke)
        return
    log.info("%s: time is up (caller spoke %.1f s); saying goodbye", call.call_id, spoke)
    await call.send_audio(audio.tone(GOODBYE_HZ, 0.3, call.sample_rate))
    await call.wait_played()
    await call.disconnect()


async def handle(call: ActiveCall) -> None:
    """One call's task. A call that fails must not take the nursery, and every other call in
    it, down with it."""
    try:
        await agent(call)
    except WSSCallClosedError:
        log.info("%s: the caller hung up mid-command", call.call_id)
    except Exception:
        log.exception("%s: the agent failed", call.call_id)


async def serve_calls(
    client: TelcoflowClient, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Handle every call offered, each in its own task, until the client stops."""
    async with trio.open_nursery() as nursery:
        calls = client.incoming_calls()
        task_status.started()  # calls offered from now on are ours
        async for call in calls:
            nursery.start_soon(handle, call)


async def serve_forever() -> None:
    """Serve until Ctrl-C (or SIGTERM), then drain: take no new calls, let the active ones end."""
    config = _harness.config_from_env()
    async with TelcoflowClient(config) as client, trio.open_nursery() as nursery:
        await nursery.start(serve_calls, client)
        print(f"connected to {client.config.base_url}; waiting for calls (Ctrl-C stops)")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        log.info("stopping: the active calls get up to %d s to end", DRAIN_S)
        await client.drain(timeout=DRAIN_S)  # serve_calls ends when the client stops


# --- demo: two calls at once; one caller hangs up early, the other talks until time is up -----

CALLER_HZ = 440
TONES = {CALLER_HZ: "the caller", GREETING_HZ: "greeting", GOODBYE_HZ: "goodbye"}


async def demo(d: _harness.Demo) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_calls, d.client)
        spec = CallSpec(from_number="+6590000021", caller_hangup_after_s=1.0)
        early = await d.place(spec, None, "hangs up at 1 s")
        spec = CallSpec(from_number="+6590000022", caller=Voice.tone(CALLER_HZ))
        chatty = await d.place(spec, None, "keeps talking")
        with trio.move_on_after(2) as waiting:
            await chatty.wait_for(lambda _: {early.state, chatty.state} == {CallState.ANSWERED})
        d.check("one nursery served both calls at once", not waiting.cancelled_caught)
        await d.finish(early)
        await d.finish(chatty)
        nursery.cancel_scope.cancel()

    for sim in (early, chatty):
        d.describe(sim, TONES)
    d.check_commands(early, ["call.answer"], "early: the agent")
    d.check("early: the caller ended the call", early.ended_reason == "caller_hangup")
    d.check_commands(chatty, ["call.answer", "call.disconnect"], "talker: the agent")
    goodbye = d.spans(chatty, "caller", GOODBYE_HZ)
    d.check(
        f"talker: heard goodbye once the {LISTEN_S:g} s were up",
        bool(goodbye) and goodbye[0][0] >= LISTEN_S - 0.1,
        ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in goodbye),
    )


def main() -> int:
    args = _harness.parser(__doc__, backend=False).parse_args()
    if _harness.wants_demo(args):
        return _harness.run_demo(demo, backend="trio")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    trio.run(serve_forever)
    return 0


if __name__ == "__main__":
    sys.exit(main())
