"""Shared plumbing of the examples, so that each example file holds only its agent.

``main()`` serves an agent on the server ``TELCOFLOW_BASE_URL`` names, or, with ``--demo`` (the
default when no server is set), runs the example's scripted calls on an embedded ``Sandbox``:
it logs what the agent and the sandbox did, prints who heard what, and returns exit code 0 only
if every check the example made passed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import anyio
import anyio.abc

from telcoflow import audio
from telcoflow.sandbox import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, CallSpec, Sandbox, SimCall
from telcoflow.testing import TONE_THRESHOLD, WINDOW_S
from telcoflow_sdk import (
    ActiveCall,
    AgentMode,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    events,
)

Agent = Callable[[ActiveCall], Awaitable[None]]
Scenario = Callable[["Demo"], Awaitable[None]]
Span = tuple[float, float]

#: Demos run at 16 kHz: telephony quality, and analysing the recordings stays quick.
DEMO_SAMPLE_RATE = 16000
#: A demo still running after this has hung: that is a failure, not something to wait for.
DEMO_TIMEOUT_S = 20.0

log = logging.getLogger("sandbox")


# --- command line ---------------------------------------------------------------------------------


def parser(doc: str | None, *, backend: bool = True) -> argparse.ArgumentParser:
    """The options every example has: ``--demo`` and (unless it picks its own) ``--backend``."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run scripted calls on an embedded sandbox (the default without TELCOFLOW_BASE_URL)",
    )
    if backend:
        p.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    return p


def wants_demo(args: argparse.Namespace) -> bool:
    return bool(args.demo) or not os.environ.get("TELCOFLOW_BASE_URL")


def config_from_env() -> TelcoflowClientConfig:
    """The server of ``TELCOFLOW_BASE_URL``, with the sandbox's default credentials unless
    ``TELCOFLOW_API_KEY`` and ``TELCOFLOW_CONNECTOR_UUID`` say otherwise."""
    return TelcoflowClientConfig.sandbox(
        api_key=os.environ.get("TELCOFLOW_API_KEY", DEFAULT_API_KEY),
        connector_uuid=os.environ.get("TELCOFLOW_CONNECTOR_UUID", DEFAULT_CONNECTOR_UUID),
    )


async def serve(agent: Agent) -> None:
    """Take every call with ``agent`` until Ctrl-C."""
    config = config_from_env()
    async with TelcoflowClient(config) as client:
        client.on(events.INCOMING_CALL, agent)
        print(f"connected to {config.base_url}; waiting for calls (Ctrl-C stops)", flush=True)
        await client.run_forever()


def main(args: argparse.Namespace, agent: Agent, scenario: Scenario) -> int:
    """Serve ``agent`` on the configured server, or run ``scenario`` as a demo."""
    backend = getattr(args, "backend", "asyncio")
    if wants_demo(args):
        return run_demo(scenario, backend=backend)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        anyio.run(serve, agent, backend=backend)
    except KeyboardInterrupt:
        pass
    return 0


# --- demo -----------------------------------------------------------------------------------------


class _Elapsed(logging.Formatter):
    """``[ 1.23s] name       message``: seconds since the demo started."""

    def __init__(self) -> None:
        super().__init__("  [%(elapsed)5.2fs] %(name)-10s %(message)s")
        self.start = time.time()

    def format(self, record: logging.LogRecord) -> str:
        record.elapsed = record.created - self.start
        return super().format(record)


def run_demo(scenario: Scenario, *, backend: str = "asyncio") -> int:
    """Run ``scenario`` against an embedded sandbox; the exit code says whether it went right."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Elapsed())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("telcoflow").setLevel(logging.WARNING)  # the SDK's own chatter
    ok = anyio.run(_run_demo, scenario, backend=backend)
    return 0 if ok else 1


async def _run_demo(scenario: Scenario) -> bool:
    async with Sandbox() as sandbox:
        config = TelcoflowClientConfig.sandbox(
            api_key=sandbox.api_key,
            connector_uuid=sandbox.connector_uuid,
            base_url=sandbox.base_url,
            sample_rate=DEMO_SAMPLE_RATE,
        )
        name = Path(sys.argv[0]).stem
        print(f"{name} demo on an embedded sandbox at {sandbox.base_url}", flush=True)
        async with TelcoflowClient(config) as client, anyio.create_task_group() as tg:
            demo = Demo(sandbox, client, tg)
            try:
                with anyio.fail_after(DEMO_TIMEOUT_S):
                    await scenario(demo)
            except TimeoutError:
                demo.check(f"the demo finished within {DEMO_TIMEOUT_S:g} s", False)
            tg.cancel_scope.cancel()
    return demo.report()


def _completed(sim: SimCall) -> int:
    """How many of the agent's commands, from the first, the sandbox has answered."""
    n = 0
    while n < len(sim.commands) and sim.commands[n]["success"] is not None:
        n += 1
    return n


def _changed(told: int, seen: tuple[CallState, AgentMode | None], sim: SimCall) -> bool:
    return _completed(sim) > told or (sim.state, sim.agent_mode) != seen


def outcomes(sim: SimCall) -> list[str]:
    """The agent's commands on ``sim``: ``call.answer`` when it succeeded, else with the code."""
    return [
        c["command"] if c["success"] else f"{c['command']} {c['error_code']}" for c in sim.commands
    ]


class Demo:
    """What a demo scenario works with: the sandbox, a connected client, and its checks."""

    def __init__(self, sandbox: Sandbox, client: TelcoflowClient, tg: anyio.abc.TaskGroup) -> None:
        self.sandbox = sandbox
        self.client = client
        self.rate = client.config.sample_rate
        self._tg = tg
        self._agents: dict[str, Agent | None] = {}
        self._agent_done: dict[str, anyio.Event] = {}
        self._placed = anyio.Event()
        self._left_at: dict[str, float] = {}
        self._spans: dict[tuple[str, str, float], list[Span]] = {}
        self._checks: list[tuple[bool, str, str]] = []
        client.on(events.INCOMING_CALL, self._on_call)

    # --- calls -------------------------------------------------------------------------------

    async def place(self, spec: CallSpec, agent: Agent | None = None, note: str = "") -> SimCall:
        """Place a simulated call for ``agent`` (``None``: the scenario serves it itself)."""
        sim = await self.sandbox.create_call(spec)
        self._agents[sim.call_id] = agent
        self._agent_done[sim.call_id] = anyio.Event()
        self._placed.set()
        self._placed = anyio.Event()
        log.info("%s: placed from %s%s", sim.call_id, spec.from_number, f" ({note})" * bool(note))
        self._tg.start_soon(self._watch, sim)
        return sim

    async def finish(self, sim: SimCall, *, talk_s: float = 0.5) -> None:
        """Wait until the agent has left ``sim``; if caller and callee are still connected then,
        let them talk for ``talk_s`` before the caller hangs up."""
        await sim.wait_for(
            lambda c: (
                c.state is CallState.DISCONNECTED
                or (c.state is CallState.CONNECTED and c.agent is None)
            )
        )
        self._left_at[sim.call_id] = self.elapsed(sim)
        if sim.state is CallState.CONNECTED:
            await anyio.sleep(talk_s)
            log.info("%s: the caller hangs up", sim.call_id)
            await sim.hangup_caller()
        await self._agent_done[sim.call_id].wait()

    async def call(
        self, spec: CallSpec, agent: Agent, note: str = "", *, talk_s: float = 0.5
    ) -> SimCall:
        """Place a call for ``agent`` and :meth:`finish` it."""
        sim = await self.place(spec, agent, note)
        await self.finish(sim, talk_s=talk_s)
        return sim

    async def _on_call(self, call: ActiveCall) -> None:
        while call.call_id not in self._agents:  # offered before place() returned
            await self._placed.wait()
        agent = self._agents[call.call_id]
        try:
            if agent is not None:
                await agent(call)
        except Exception as exc:
            log.error("%s: the agent failed: %r", call.call_id, exc)
            self.check(f"{call.call_id}: the agent finished without an error", False, repr(exc))
        finally:
            self._agent_done[call.call_id].set()

    async def _watch(self, sim: SimCall) -> None:
        """Log the sandbox's side: every command's outcome, every change of state or mode."""
        told, seen = 0, (sim.state, sim.agent_mode)
        while True:
            await sim.wait_for(functools.partial(_changed, told, seen))
            lines = [o if " " in o else f"{o} ok" for o in outcomes(sim)[told : _completed(sim)]]
            told += len(lines)
            if (sim.state, sim.agent_mode) != seen:
                seen = (sim.state, sim.agent_mode)
                mode = f", agent in {sim.agent_mode.value} mode" if sim.agent_mode else ""
                gone = ", agent gone" * (sim.state is CallState.CONNECTED and sim.agent is None)
                state = f"-> {sim.state.value}{mode}{gone}"
                if sim.state is CallState.DISCONNECTED:
                    state = f"call ended ({sim.ended_reason})"
                lines[-1:] = [" ".join([*lines[-1:], state])]
            for line in lines:
                log.info("%s: %s", sim.call_id, line)
            if sim.state is CallState.DISCONNECTED:
                return

    # --- recordings ----------------------------------------------------------------------------

    def elapsed(self, sim: SimCall) -> float:
        """Seconds of the call's timeline (from its placing) recorded so far."""
        return len(sim.recording("caller")) / (2 * self.rate)

    def left_at(self, sim: SimCall) -> float:
        """When the agent left ``sim`` (seconds into the call), as seen by :meth:`finish`."""
        return self._left_at[sim.call_id]

    def spans(self, sim: SimCall, party: str, hz: float) -> list[Span]:
        """When ``party`` heard a tone at ``hz``: (start, end) seconds into the call."""
        key = (sim.call_id, party, hz)
        if key in self._spans:
            return self._spans[key]
        pcm, step = sim.recording(party), int(self.rate * WINDOW_S) * 2
        spans: list[Span] = []
        for i in range(0, len(pcm) - step + 1, step):
            if audio.tone_level(pcm[i : i + step], self.rate, hz) >= TONE_THRESHOLD:
                start, end = i / (2 * self.rate), (i + step) / (2 * self.rate)
                if spans and spans[-1][1] == start:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
        if sim.state is CallState.DISCONNECTED:  # the recording is final
            self._spans[key] = spans
        return spans

    def heard_s(
        self, sim: SimCall, party: str, hz: float, start_s: float = 0.0, end_s: float = 1e9
    ) -> float:
        """Seconds ``party`` heard ``hz`` between ``start_s`` and ``end_s`` of the call."""
        spans = self.spans(sim, party, hz)
        total = sum(max(0.0, min(b, end_s) - max(a, start_s)) for a, b in spans)
        return round(total, 3)  # to the millisecond: no float noise in comparisons

    def describe(
        self, sim: SimCall, tones: Mapping[int, str], names: Mapping[str, str] | None = None
    ) -> None:
        """Print who heard which of ``tones`` ({hz: what it stands for}), and when; ``names``
        renames the parties (``{"callee": "operator"}``)."""
        print(f"\nWho heard what on {sim.call_id} (seconds into the call):", flush=True)
        for party in ("caller", "callee", "agent"):
            heard = [
                (spans[0][0], f"{what} ({hz:g} Hz) at {_spans_text(spans)}")
                for hz, what in tones.items()
                if (spans := self.spans(sim, party, hz))
            ]
            text = "; ".join(line for _, line in sorted(heard)) or "none of them"
            print(f"  {(names or {}).get(party, party):10} heard {text}", flush=True)
        print(flush=True)

    # --- checks --------------------------------------------------------------------------------

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self._checks.append((ok, what, detail))

    def check_commands(self, sim: SimCall, expected: Iterable[str], who: str = "the agent") -> None:
        """Check the commands ``sim`` got, as :func:`outcomes` writes them."""
        want, got = list(expected), outcomes(sim)
        detail = "" if got == want else f"got {', '.join(got) or 'none'}"
        self.check(f"{who} sent {', '.join(want)}", got == want, detail)

    def report(self) -> bool:
        print("What happened:")
        for ok, what, detail in self._checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {what}" + f" [{detail}]" * bool(detail))
        ok = bool(self._checks) and all(ok for ok, _, _ in self._checks)
        print(f"Result: {'OK' if ok else 'FAILED'}", flush=True)
        return ok


def _spans_text(spans: list[Span]) -> str:
    return ", ".join(f"{a:.1f}-{b:.1f}" for a, b in spans)
