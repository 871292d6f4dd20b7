"""``telcoflow demo``: one simulated call through an example agent on an embedded sandbox.

The agent answers, greets the caller with a tone, echoes what it hears, then connects the caller
to the callee and leaves. The demo then checks, on the sandbox's recordings, who heard whom, and
exits non-zero if anything went differently than expected.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import attrs

from .. import audio, events
from ..call import ActiveCall
from ..client import TelcoflowClient
from ..config import TelcoflowClientConfig
from ..sandbox import CalleeSpec, CallSpec, Sandbox, SimCall, Voice
from ._backend import run_async

__all__ = ["DemoAgent", "run_demo"]

CALLER_HZ = 440
CALLEE_HZ = 880
GREETING_HZ = 660
GREETING_S = 0.6
ECHO_S = 1.5
#: A tone is "heard" when its amplitude is at least this (a tone plays at 0.25 of full scale).
HEARD = 0.02
#: The whole demo must finish within this; a hang is a failure, not a wait.
DEMO_TIMEOUT_S = 30.0


@attrs.define
class DemoAgent:
    """The example agent: answer, greet, echo, connect the callee, leave."""

    log: Callable[[str], None]
    greeting_hz: int = GREETING_HZ
    echo_seconds: float = ECHO_S
    ring_time_seconds: int = 10

    async def __call__(self, call: ActiveCall) -> None:
        self.log(f"agent: incoming call {call.call_id} from {call.caller_number} ({call.state})")
        call.on(events.CALL_ANSWERED, lambda: self.log("agent: event call.answered"))
        call.on(events.CALL_CONNECTED, lambda: self.log("agent: event call.connected"))
        call.on(events.CALL_TERMINATED, lambda r: self.log(f"agent: event call.terminated ({r})"))
        await call.answer()
        self.log(f"agent: answered -> {call.state}")
        await call.send_audio(audio.tone(self.greeting_hz, GREETING_S, call.sample_rate))
        self.log(f"agent: greeting queued ({GREETING_S:g} s of {self.greeting_hz} Hz)")
        echoed = 0
        target = int(self.echo_seconds * call.sample_rate * 2)
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
            echoed += len(chunk)
            if echoed >= target:
                break
        self.log(f"agent: echoed {echoed / (call.sample_rate * 2):.2f} s of the caller")
        await call.connect(ring_time_seconds=self.ring_time_seconds)
        self.log(f"agent: callee answered -> {call.state} (agent mode {call.agent_mode})")
        await call.close()
        self.log("agent: left the call (caller and callee stay connected)")


@attrs.define
class _Check:
    what: str
    ok: bool
    detail: str


class _Demo:
    def __init__(self, out: TextIO, sample_rate: int) -> None:
        self.out = out
        self.sample_rate = sample_rate
        self.start = 0.0
        self.marks: dict[str, int] = {}
        self.events: list[str] = []
        self.sim: SimCall | None = None

    def log(self, text: str) -> None:
        print(f"  [{anyio.current_time() - self.start:5.2f}s] {text}", file=self.out, flush=True)

    def mark(self, name: str) -> None:
        """Remember where the recordings are now, to split them into the call's phases."""
        assert self.sim is not None
        self.marks[name] = len(self.sim.recordings["caller"])

    async def run(self) -> bool:
        self.start = anyio.current_time()
        async with Sandbox() as sb:
            print(f"telcoflow demo: embedded sandbox at {sb.base_url}", file=self.out)
            config = TelcoflowClientConfig.sandbox(
                api_key=sb.api_key,
                connector_uuid=sb.connector_uuid,
                base_url=sb.base_url,
                sample_rate=self.sample_rate,
            )
            agent = DemoAgent(self.log)
            done = anyio.Event()

            async def on_call(call: ActiveCall) -> None:
                call.on(events.CALL_ANSWERED, lambda: self.mark("answered"))
                call.on(events.CALL_CONNECTED, lambda: self.mark("connected"))
                for name in (events.CALL_ANSWERED, events.CALL_CONNECTED, events.CALL_TERMINATED):
                    call.on(name, lambda _payload, name=name: self.events.append(name))
                call.on(events.CALL_TERMINATED, done.set)
                try:
                    await agent(call)
                except Exception as exc:
                    self.log(f"agent: failed: {exc!r}")
                    await call.force_disconnect()

            async with TelcoflowClient(config) as client:
                client.on(events.INCOMING_CALL, on_call)
                self.sim = sim = await sb.create_call(
                    CallSpec(
                        caller=Voice.tone(CALLER_HZ),
                        callee=CalleeSpec(answer_after_s=1.0, voice=Voice.tone(CALLEE_HZ)),
                    )
                )
                self.log(
                    f"sandbox: call {sim.call_id} placed {sim.spec.from_number} -> "
                    f"{sim.spec.to_number} (caller: {CALLER_HZ} Hz tone; callee answers "
                    f"after 1 s with {CALLEE_HZ} Hz)"
                )
                try:
                    with anyio.fail_after(DEMO_TIMEOUT_S):
                        await done.wait()
                        self.mark("agent_left")
                        self.log(
                            f"sandbox: call is {sim.state}, agent gone; caller and callee talk"
                        )
                        length = self.marks["agent_left"] + self.sample_rate * 2
                        await sim.wait_for(lambda c: len(c.recordings["caller"]) >= length)
                except TimeoutError:
                    self.log(f"demo: timed out after {DEMO_TIMEOUT_S:g} s")
                await sim.hangup_caller()
                self.mark("ended")
                self.log(f"sandbox: caller hung up; call {sim.state} ({sim.ended_reason})")
            return self.report(sim)

    def _level(self, party: str, start: str, end: str, hz: int) -> float:
        assert self.sim is not None
        a, b = self.marks.get(start), self.marks.get(end)
        if a is None or b is None or b <= a:
            return 0.0
        return audio.tone_level(self.sim.recording(party)[a:b], self.sample_rate, hz)

    def report(self, sim: SimCall) -> bool:
        lv = self._level
        checks = [
            _Check(
                "events fired once each, in order",
                self.events
                == [events.CALL_ANSWERED, events.CALL_CONNECTED, events.CALL_TERMINATED],
                ", ".join(self.events) or "none",
            ),
            _Check(
                "commands all succeeded",
                [c["command"] for c in sim.commands]
                == ["call.answer", "call.connect", "call.close"]
                and all(c["success"] for c in sim.commands),
                ", ".join(
                    f"{c['command']}={'ok' if c['success'] else c['error_code']}"
                    for c in sim.commands
                ),
            ),
        ]
        heard = [
            ("caller", "answered", "connected", GREETING_HZ, True, "the agent's greeting"),
            ("caller", "answered", "connected", CALLER_HZ, True, "its own voice, echoed"),
            ("agent", "answered", "connected", CALLER_HZ, True, "the caller"),
            ("callee", "connected", "ended", CALLER_HZ, True, "the caller"),
            ("caller", "connected", "ended", CALLEE_HZ, True, "the callee"),
            ("agent", "agent_left", "ended", CALLER_HZ, False, "the caller after leaving"),
        ]
        for party, start, end, hz, expected, what in heard:
            level = lv(party, start, end, hz)
            ok = (level >= HEARD) == expected
            verdict = "heard" if level >= HEARD else "did not hear"
            checks.append(_Check(f"{party} {verdict} {what} ({hz} Hz)", ok, f"level {level:.3f}"))
        stats = sim.stats
        checks.append(
            _Check(
                "agent audio within credit",
                stats.excess_bytes == 0 and stats.protocol_errors == 0,
                f"excess {stats.excess_bytes} bytes, protocol errors {stats.protocol_errors}",
            )
        )
        checks.append(
            _Check(
                "call ended by the caller",
                sim.ended_reason == "caller_hangup",
                str(sim.ended_reason),
            )
        )
        print("\nWhat happened:", file=self.out)
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            print(f"  {mark} {check.what} [{check.detail}]", file=self.out)
        seconds = stats.agent_bytes_received / (self.sample_rate * 2)
        print(
            f"\nAgent sent {seconds:.2f} s of audio; playout underruns {stats.underrun_ms} ms "
            f"(gaps the caller heard while the agent was talking).",
            file=self.out,
        )
        ok = all(c.ok for c in checks)
        print(f"Result: {'OK' if ok else 'FAILED'}", file=self.out)
        return ok


def run_demo(backend: str = "asyncio", sample_rate: int = 24000, out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code (0 when the call went as expected)."""
    demo = _Demo(out or sys.stdout, sample_rate)

    async def main() -> Any:
        return await demo.run()

    ok = run_async(main, backend=backend)
    return 0 if ok else 1
