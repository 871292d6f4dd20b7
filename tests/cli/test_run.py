"""``telcoflow run`` over real processes: workers spreading calls, --max-calls, SIGTERM drains,
SIGKILL restarts, readiness while draining, Prometheus metrics, the handler's import."""

from __future__ import annotations

import collections
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from telcoflow.sandbox import CallSpec, Sandbox, SimCall

from ..helpers import WAIT

pytestmark = pytest.mark.anyio

#: Processes start Python and import the SDK: slower than anything in-process.
START = 30.0

AGENT = textwrap.dedent(
    """
    async def answer(call):
        await call.answer()
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)


    async def crash(call):
        raise RuntimeError("the agent is broken")


    async def which(call):
        import logging

        import sniffio

        logging.getLogger("agent").warning("running on %s", sniffio.current_async_library())
        await call.answer()
        await call.close()
    """
)


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    (tmp_path / "agent.py").write_text(AGENT)
    return tmp_path


class Proc:
    """A ``telcoflow run`` process and the lines of its log, waited on by pattern."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = anyio.Event()

    async def read(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        try:
            async for data in self.process.stderr:
                buffer += data
                *done, buffer = buffer.split(b"\n")
                self.lines += [line.decode(errors="replace") for line in done]
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the process was closed

    async def wait_line(self, pattern: str, count: int = 1) -> re.Match[str]:
        with anyio.fail_after(START):
            while True:
                found = [m for line in self.lines if (m := re.search(pattern, line))]
                if len(found) >= count:
                    return found[count - 1]
                await self._changed.wait()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def stop_now(self) -> None:
        """Two Ctrl-C's: drain, then leave the calls at once. The second is sent once the first
        is seen (the log says so): signals sent back to back may reach the process as one."""
        self.signal(signal.SIGINT)
        await self.wait_line("draining")
        self.signal(signal.SIGINT)

    async def exit_code(self) -> int:
        with anyio.fail_after(START):
            return await self.process.wait()


@asynccontextmanager
async def telcoflow_run(
    sandbox: Sandbox,
    agent_dir: Path,
    *args: str,
    target: str = "agent:answer",
    before: Sequence[str] = (),
) -> AsyncIterator[Proc]:
    env = {
        **os.environ,
        "TELCOFLOW_BASE_URL": sandbox.base_url,
        "TELCOFLOW_API_KEY": sandbox.api_key,
        "TELCOFLOW_CONNECTOR_UUID": sandbox.connector_uuid,
    }
    command = [sys.executable, "-m", "telcoflow", *before, "run", target, *args]
    process = await anyio.open_process(command, cwd=agent_dir, env=env, stdout=None)
    proc = Proc(process)
    async with anyio.create_task_group() as tg:
        tg.start_soon(proc.read)
        try:
            yield proc
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
            tg.cancel_scope.cancel()


async def _calls(sandbox: Sandbox, n: int, **spec: object) -> list[SimCall]:
    return [await sandbox.create_call(CallSpec(**spec)) for _ in range(n)]  # type: ignore[arg-type]


async def _metrics(port: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def _status(port: int, path: str) -> int:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        return (await http.get(f"http://127.0.0.1:{port}{path}")).status_code


async def test_three_workers_take_thirty_calls_each_once_spread_over_all(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    async with telcoflow_run(
        sandbox, agent_dir, "--workers", "3", "--http-port", "0", "--log-level", "debug"
    ) as run:
        port = int((await run.wait_line(r"health and metrics on http://[\d.]+:(\d+)"))[1])
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 3)
        # One after another, each once answered (calls ring in over a second or two, as a
        # connector's do): the least loaded worker claims first, so each gets its share. (A
        # burst of 30 in 0.1 s on a 2-core machine is decided by which process the kernel
        # runs first.)
        sims = []
        with anyio.fail_after(START):
            for _ in range(30):
                sims += await _calls(sandbox, 1, caller_hangup_after_s=1.5)
                await sims[-1].wait_state("ANSWERED")
            for sim in sims:
                await sim.wait_ended()
        answers = [[c for c in sim.commands if c["command"] == "call.answer"] for sim in sims]
        assert all(len(a) == 1 and a[0]["success"] for a in answers), "each taken exactly once"
        by_worker = collections.Counter(sim.bound_to for sim in sims)
        assert len(by_worker) == 3, by_worker
        assert min(by_worker.values()) >= 5, f"load-based claiming spreads them: {by_worker}"
        # Each worker publishes a call's metrics as it ends, then says so.
        await run.wait_line(r"ended \(caller_hangup\): metrics published", count=30)
        metrics = await _metrics(port)
        assert metrics["telcoflow_calls_taken_total"] == 30
        assert metrics["telcoflow_calls_ended_total{reason=caller_hangup}"] == 30
        assert metrics["telcoflow_ready"] == 3
        run.signal(signal.SIGTERM)
        assert await run.exit_code() == 0


async def test_max_calls_sends_the_third_call_to_another_worker(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    async with telcoflow_run(sandbox, agent_dir, "--workers", "2", "--max-calls", "2") as run:
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        sims = await _calls(sandbox, 4)  # four concurrent calls, none hangs up
        with anyio.fail_after(WAIT):
            for sim in sims:
                await sim.wait_state("ANSWERED")
        assert sorted(collections.Counter(s.bound_to for s in sims).values()) == [2, 2]
        fifth = await sandbox.create_call()
        # Both are full: each says it leaves the call to the others (the positive marker).
        await run.wait_line(rf"session {fifth.session_id} not claimed: at max_calls", count=2)
        assert fifth.bound_to is None
        await sims[0].hangup_caller()  # room again: the fifth is taken
        with anyio.fail_after(WAIT):
            await fifth.wait_state("ANSWERED")
        await run.stop_now()
        assert await run.exit_code() == 0


async def test_sigterm_drains_a_worker_its_calls_finish_new_ones_go_elsewhere(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    async with (
        telcoflow_run(sandbox, agent_dir, "--http-port", "0") as leaving,
        telcoflow_run(sandbox, agent_dir) as staying,
    ):
        port = int((await leaving.wait_line(r"health and metrics on http://[\d.]+:(\d+)"))[1])
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        first = (await _calls(sandbox, 1))[0]
        with anyio.fail_after(WAIT):
            await first.wait_state("ANSWERED")
        # Make sure the leaving worker holds a call: place until it has one.
        held = [first]
        while not any(s.bound_to == _id_of(sandbox, leaving) for s in held):
            held += await _calls(sandbox, 1)
            with anyio.fail_after(WAIT):
                await held[-1].wait_state("ANSWERED")
        mine = next(s for s in held if s.bound_to == _id_of(sandbox, leaving))
        assert await _status(port, "/readyz") == 200
        leaving.signal(signal.SIGTERM)
        await leaving.wait_line("draining")
        assert await _status(port, "/readyz") == 503, "not ready while draining"
        assert await _status(port, "/healthz") == 200
        later = await _calls(sandbox, 3)
        with anyio.fail_after(WAIT):
            for sim in later:
                await sim.wait_state("ANSWERED")
        assert all(s.bound_to != _id_of(sandbox, leaving) for s in later)
        assert mine.state.value == "ANSWERED", "its call goes on while it drains"
        await mine.hangup_caller()
        assert await leaving.exit_code() == 0
        assert mine.ended_reason == "caller_hangup"
        assert all(s.state.value == "ANSWERED" for s in later), "the others' calls untouched"
        staying.signal(signal.SIGTERM)
        for sim in [*held, *later]:
            if not sim.ended:
                await sim.hangup_caller()
        assert await staying.exit_code() == 0


def _id_of(sandbox: Sandbox, proc: Proc) -> str | None:
    """The control connection id of ``proc``'s worker, from its log."""
    for line in proc.lines:
        m = re.search(r"control connection ready \(smWsId (\S+)\)", line)
        if m:
            return m[1]
    return None


async def test_a_killed_worker_is_restarted_and_the_others_calls_are_untouched(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    async with telcoflow_run(sandbox, agent_dir, "--workers", "2", "--max-calls", "3") as run:
        first = await run.wait_line(r"worker 0 started \(pid (\d+)\)")
        second = await run.wait_line(r"worker 1 started \(pid (\d+)\)")
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        sims = await _calls(sandbox, 6)  # three each: --max-calls 3
        with anyio.fail_after(WAIT):
            for sim in sims:
                await sim.wait_state("ANSWERED")
        assert sorted(collections.Counter(s.bound_to for s in sims).values()) == [3, 3]
        victim = int(first[1])
        os.kill(victim, signal.SIGKILL)
        await run.wait_line(r"worker 0 \(pid \d+\) exited with code -9; restarting")
        await run.wait_line(r"worker 0 started \(pid (\d+)\)", count=2)
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        survivors = [s for s in sims if s.state.value == "ANSWERED"]
        killed = [s for s in sims if s.ended]
        assert len(survivors) == 3, "the other worker's calls are untouched"
        assert len({s.bound_to for s in survivors}) == 1
        assert all(
            s.ended_reason == "media_lost" or s.ended_reason == "agent_close" for s in killed
        )
        new = await _calls(sandbox, 3)  # the restarted worker has room for three
        with anyio.fail_after(WAIT):
            for sim in new:
                await sim.wait_state("ANSWERED")
        assert int(second[1]) != victim
        await run.stop_now()
        assert await run.exit_code() == 0


async def test_a_handler_that_raises_releases_or_leaves_its_call(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    async with telcoflow_run(sandbox, agent_dir, target="agent:crash") as run:
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 1)
        sim = await sandbox.create_call()
        await run.wait_line(r"INCOMING_CALL handler raised; releasing the call")
        line = await run.wait_line(r"the agent is broken")
        assert line  # the traceback is logged, once per failure
        with anyio.fail_after(WAIT):
            await sim.wait_for(lambda c: c.offers >= 2)  # released: notified again
        await run.wait_line(rf"session {sim.session_id}: its handler failed here; left to other")
        assert sim.state.value == "PENDING"
        assert sim.bound_to is None
        run.signal(signal.SIGTERM)  # it holds no call: the drain is over at once
        assert await run.exit_code() == 0


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("agent", "expected module:handler"),
        ("nowhere:agent", "cannot import"),
        ("agent:missing", "no attribute"),
    ],
)
async def test_a_bad_target_says_what_is_wrong(
    sandbox: Sandbox, agent_dir: Path, target: str, error: str
) -> None:
    async with telcoflow_run(sandbox, agent_dir, target=target) as run:
        assert await run.exit_code() == 2
        await run.wait_line(error)


async def test_no_credentials_says_which_variables(agent_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELCOFLOW_")}
    result = await anyio.run_process(
        [sys.executable, "-m", "telcoflow", "run", "agent:answer"],
        cwd=agent_dir,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert b"TELCOFLOW_API_KEY" in result.stderr
    assert b"--sandbox" in result.stderr


@pytest.mark.parametrize("where", ["after", "before"])
async def test_the_backend_option_runs_the_agent_on_trio(
    sandbox: Sandbox, agent_dir: Path, where: str
) -> None:
    """``telcoflow run agent:x --backend trio`` and ``telcoflow --backend trio run agent:x``."""
    option = ("--backend", "trio")
    after, before = (option, ()) if where == "after" else ((), option)
    async with telcoflow_run(
        sandbox, agent_dir, *after, target="agent:which", before=before
    ) as run:
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 1)
        sim = await sandbox.create_call()
        await run.wait_line(r"running on trio")
        with anyio.fail_after(WAIT):
            assert await sim.wait_ended() == "agent_close"
        run.signal(signal.SIGTERM)
        assert await run.exit_code() == 0


async def test_workers_of_a_killed_supervisor_drain_and_exit(
    sandbox: Sandbox, agent_dir: Path
) -> None:
    """SIGKILL of the supervisor (the OOM killer, a hard stop) used to leave its workers
    running for good, orphans reconnecting to a service nobody stopped them from. They notice
    their new parent, drain (a call in hand finishes) and exit."""
    async with telcoflow_run(sandbox, agent_dir, "--workers", "2") as run:
        with anyio.fail_after(START):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        sim = (await _calls(sandbox, 1))[0]
        with anyio.fail_after(WAIT):
            await sim.wait_state("ANSWERED")
        run.signal(signal.SIGKILL)
        assert await run.exit_code() == -signal.SIGKILL
        await run.wait_line(r"the supervisor \(pid \d+\) is gone: draining", count=2)
        assert sim.state.value == "ANSWERED", "its call goes on while the worker drains"
        await sim.hangup_caller()
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: not sandbox.control_sessions())  # both left
