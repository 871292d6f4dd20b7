"""Time to first audio, turn latency and barge-in latency of ``telcoflow.bridge``, measured on
the sandbox's recordings (what the caller actually heard), per model adapter.

    python benchmarks/bridge_latency.py --adapter scripted --calls 20
    python benchmarks/bridge_latency.py --adapter openai --calls 20   # the openai stand-in
    python benchmarks/bridge_latency.py --adapter gemini --calls 20   # the gemini stand-in

Each call: the model greets (1 s tone); the caller asks (0.4 s), hears the first answer begin
and talks over it (barge-in), then hears the second answer whole and hangs up. From the
recordings on the call's timeline (10 ms windows):

- TTFA: the ``call.answer`` command → the first greeting audio the caller heard;
- turn latency: the end of the caller's question (as the agent heard it) → the answer heard;
- barge-in: the caller starts talking over the answer (as the agent heard it) → the answer
  stops in the caller's ear.

The stand-ins add no model latency of their own, so the figures are the bridge's, the SDK's
and the sandbox's (loopback, 20 ms media frames), plus the stand-in's VAD (its first 20 ms
chunk over the speech threshold, and 300 ms of quiet to end a turn: subtracted from the turn
latency below).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from telcoflow import TelcoflowClient, TelcoflowClientConfig
from telcoflow.audio import tone, tone_level, write_wav
from telcoflow.bridge import ModelAdapter, ScriptedModel, bridge
from telcoflow.sandbox import CallSpec, Sandbox, SimCall, Voice
from telcoflow.testing import Answer, CallInbox
from telcoflow.testing._engine import END_OF_TURN_S

CALLER_HZ, GREETING_HZ, FIRST_HZ, SECOND_HZ = 440, 550, 660, 770
SCRIPT = (
    Answer(GREETING_HZ, 1.0, "Hello!"),
    Answer(FIRST_HZ, 2.0, "A long first answer."),
    Answer(SECOND_HZ, 1.0, "The second answer."),
)
WINDOW_S = 0.01


def caller_voice(rate: int) -> Voice:
    def talk(s: float) -> bytes:
        return tone(CALLER_HZ, s, rate)

    def quiet(s: float) -> bytes:
        return bytes(2 * int(rate * s))

    # greeting (1 s) · question · the first answer starts, 0.5 s of it heard · barge-in · the
    # second answer whole
    pcm = quiet(2.0) + talk(0.4) + quiet(1.1) + talk(0.4) + quiet(2.5)
    return Voice.from_wav(write_wav(None, pcm, rate), loop=False)


def spans(sim: SimCall, party: str, hz: float) -> list[tuple[float, float]]:
    pcm, rate = sim.recording(party), sim.sample_rate or 24000
    step = int(rate * WINDOW_S) * 2
    out: list[tuple[float, float]] = []
    for i in range(0, len(pcm) - step + 1, step):
        if tone_level(pcm[i : i + step], rate, hz) >= 0.05:
            a, b = i / (2 * rate), (i + step) / (2 * rate)
            if out and abs(out[-1][1] - a) < WINDOW_S / 2 + 0.02:  # bridge 1-2 window gaps
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
    return out


def measure(sim: SimCall) -> dict[str, float | None]:
    answered = next((c["at_s"] for c in sim.commands if c["command"] == "call.answer"), None)
    greeting = spans(sim, "caller", GREETING_HZ)
    first = spans(sim, "caller", FIRST_HZ)
    caller = spans(sim, "agent", CALLER_HZ)
    out: dict[str, float | None] = {"ttfa_s": None, "turn_s": None, "barge_in_s": None}
    if answered is not None and greeting:
        out["ttfa_s"] = greeting[0][0] - answered
    if len(caller) >= 2 and first:
        out["turn_s"] = first[0][0] - caller[0][1] - END_OF_TURN_S
        out["barge_in_s"] = first[-1][1] - caller[1][0]
    return out


Factory = Callable[[], ModelAdapter]


@asynccontextmanager
async def adapter_factory(kind: str) -> AsyncIterator[Factory]:
    if kind == "scripted":
        yield lambda: ScriptedModel(SCRIPT)
        return
    if kind == "openai":
        from openai import AsyncOpenAI

        from telcoflow.bridge.openai import OpenAIRealtimeAdapter
        from telcoflow.testing.openai_realtime import OpenAIRealtimeStandIn

        async with OpenAIRealtimeStandIn(script=SCRIPT) as standin:
            client = AsyncOpenAI(api_key=standin.api_key, base_url=standin.base_url)
            yield lambda: OpenAIRealtimeAdapter(client)
        return
    if kind == "gemini":
        from google import genai
        from google.genai import types

        from telcoflow.bridge.gemini import GeminiLiveAdapter
        from telcoflow.testing.gemini_live import GeminiLiveStandIn

        async with GeminiLiveStandIn(script=SCRIPT) as standin:
            client = genai.Client(
                api_key=standin.api_key,
                http_options=types.HttpOptions(
                    base_url=standin.base_url,
                    async_client_args={"ssl": standin.client_ssl_context()},
                ),
            )
            yield lambda: GeminiLiveAdapter(client)
        return
    raise SystemExit(f"unknown adapter {kind!r}: scripted, openai or gemini")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, float | None]] = []
    async with AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(Sandbox())
        make = await stack.enter_async_context(adapter_factory(args.adapter))
        config = TelcoflowClientConfig.sandbox(
            api_key=sandbox.api_key,
            connector_uuid=sandbox.connector_uuid,
            base_url=sandbox.base_url,
            sample_rate=args.rate,
        )
        client = await stack.enter_async_context(TelcoflowClient(config))
        inbox = stack.enter_context(CallInbox(client))
        limiter = anyio.Semaphore(args.concurrency)

        async def one() -> None:
            async with limiter:
                sim = await sandbox.create_call(
                    CallSpec(caller=caller_voice(args.rate), caller_hangup_after_s=6.5)
                )
                call = await inbox.next()
                with anyio.fail_after(30):
                    await bridge(call, make(), greeting=True)
                    await sim.wait_for(lambda c: c.ended_reason is not None)
                results.append(measure(sim))

        async with anyio.create_task_group() as tg:
            for _ in range(args.calls):
                tg.start_soon(one)
    summary: dict[str, Any] = {"adapter": args.adapter, "calls": args.calls, "rate": args.rate}
    for key in ("ttfa_s", "turn_s", "barge_in_s"):
        values = sorted(v for r in results if (v := r[key]) is not None)
        summary[key] = {
            "n": len(values),
            "p50_ms": round(1000 * statistics.median(values)) if values else None,
            "p99_ms": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))])
            if values
            else None,
            "max_ms": round(1000 * values[-1]) if values else None,
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="scripted", help="scripted, openai or gemini")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=int, default=24000)
    parser.add_argument("--backend", default="asyncio", help="asyncio or trio (scripted only)")
    args = parser.parse_args()
    summary = anyio.run(run, args, backend=args.backend)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
