"""Soak test: many echo calls through one client for minutes; memory, descriptors and tasks must
stay flat.

A sandbox (``record=False``: no recordings) and a client run in one process. ``--concurrency``
dialers each place a call that the caller hangs up after a few seconds, wait for it to end and
place the next, while the client's INCOMING_CALL handler answers every call and echoes what it
hears. Every ``--interval`` seconds a sample is printed: elapsed time, calls completed, active
calls, RSS, open file descriptors, live tasks and allocated blocks (after ``gc.collect()``:
cyclic garbage waiting for the collector would otherwise swing RSS by tens of percent). At the
end the dialers stop, the process goes idle, and the summary compares the first sample after
warm-up with the last (under load) and the idle process before and after the run. Exit status
1 if descriptors or tasks grew (idle vs. idle, beyond ``--tolerance``), RSS grew more than
``--max-rss-growth`` (first loaded sample vs. last) or a call went wrong.

    python benchmarks/soak.py --minutes 1 --concurrency 10 [--backend trio] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio

from telcoflow import (
    ActiveCall,
    BufferClosedError,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSError,
    events,
)
from telcoflow.sandbox import Sandbox

#: What the summary compares.
KEYS = ("rss_kib", "blocks", "fds", "tasks", "threads")


def live_tasks(backend: str) -> int:
    """Live tasks of the event loop: the sandbox's, the client's and this script's."""
    if backend == "trio":
        import trio

        def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
            yield task
            for nursery in task.child_nurseries:
                for child in nursery.child_tasks:
                    yield from walk(child)

        root = trio.lowlevel.current_root_task()
        assert root is not None
        return len(list(walk(root)))
    import asyncio

    return len(asyncio.all_tasks())


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.completed = 0
        self.errors: list[str] = []
        self.samples: list[dict[str, Any]] = []

    def sample(self, client: TelcoflowClient, phase: str) -> dict[str, Any]:
        gc.collect()  # count live objects, not cyclic garbage the collector has yet to visit
        return {
            "phase": phase,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "completed": self.completed,
            "active": len(client.calls),
            "rss_kib": rss_kib(),
            "fds": len(os.listdir("/proc/self/fd")),
            "tasks": live_tasks(self.args.backend),
            "threads": threading.active_count(),
            # Python objects alive: flat when nothing leaks, whatever the allocator does to RSS.
            "blocks": sys.getallocatedblocks(),
        }

    def show(self, sample: dict[str, Any]) -> None:
        if self.args.json:
            print(json.dumps(sample), flush=True)
        else:
            s = sample
            print(
                f"{s['phase']:>6} {s['elapsed_s']:7.1f} s  completed {s['completed']:6d}"
                f"  active {s['active']:4d}  rss {s['rss_kib'] / 1024:7.1f} MiB"
                f"  fds {s['fds']:4d}  tasks {s['tasks']:5d}  blocks {s['blocks']:8d}",
                flush=True,
            )

    async def agent(self, call: ActiveCall) -> None:
        """The INCOMING_CALL handler: answer, then echo until the caller hangs up."""
        try:
            await call.answer()
            async for chunk in call.audio_stream():
                await call.send_audio(chunk)
        except BufferClosedError:
            pass  # audio heard before the hang-up, echoed after it: nowhere to go
        except WSSError as exc:
            self.errors.append(f"{call.call_id}: {exc!r}")

    async def dialer(self, sb: Sandbox, deadline: float) -> None:
        """Place a call, wait until it is over, place the next, until ``deadline``."""
        await anyio.sleep(random.uniform(0, self.args.call_seconds))  # stagger the calls
        while time.monotonic() < deadline:
            seconds = self.args.call_seconds * random.uniform(0.75, 1.25)
            sim = await sb.create_call(caller_hangup_after_s=seconds)
            with anyio.fail_after(seconds + 30):
                reason = await sim.wait_ended()
            if reason != "caller_hangup":
                self.errors.append(f"{sim.call_id}: ended {reason}")
            self.completed += 1
            # The sandbox keeps every call for its HTTP API; forget finished ones so that the
            # RSS measured is the client's, not the emulator's history.
            sb._calls.pop(sim.call_id, None)

    async def sampler(self, client: TelcoflowClient, deadline: float) -> None:
        warmup_end = self.started + self.args.warmup
        while True:
            await anyio.sleep(self.args.interval)
            if time.monotonic() >= deadline:
                return
            phase = "load" if time.monotonic() >= warmup_end else "warmup"
            self.samples.append(self.sample(client, phase))
            self.show(self.samples[-1])

    async def quiesce(self, client: TelcoflowClient, target_tasks: int) -> dict[str, Any]:
        """Wait (bounded) until the calls' tasks are gone, then sample the idle process."""
        for _ in range(300):  # nothing to wait on for "every task has ended": poll, 15 s at most
            if not client.calls and live_tasks(self.args.backend) <= target_tasks:
                break
            await anyio.sleep(0.05)
        return self.sample(client, "idle")

    async def run(self) -> dict[str, Any]:
        async with Sandbox(record=False) as sb:
            config = TelcoflowClientConfig.sandbox(
                api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
            )
            client = TelcoflowClient(config)
            client.on(events.INCOMING_CALL, self.agent)
            async with client:
                await anyio.sleep(0.5)  # let the client's own tasks (heartbeat) start
                before = self.sample(client, "idle")
                self.show(before)
                deadline = time.monotonic() + self.args.minutes * 60
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.sampler, client, deadline)
                    for _ in range(self.args.concurrency):
                        tg.start_soon(self.dialer, sb, deadline)
                after = await self.quiesce(client, before["tasks"])
                self.show(after)
        return self.summary(before, after)

    def summary(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        loaded = [s for s in self.samples if s["phase"] == "load"]
        first, last = (loaded[0], loaded[-1]) if loaded else (before, after)
        rss_growth = (last["rss_kib"] - first["rss_kib"]) / max(1, first["rss_kib"])
        failures = []
        for key in ("fds", "tasks"):
            if after[key] - before[key] > self.args.tolerance:
                failures.append(f"{key} grew from {before[key]} to {after[key]} (idle)")
        if rss_growth > self.args.max_rss_growth:
            failures.append(f"RSS grew {rss_growth:.1%} under load")
        if not loaded:
            failures.append("no sample after warm-up: run longer or warm up less")
        if self.errors:
            failures.append(f"{len(self.errors)} calls went wrong, e.g. {self.errors[0]}")
        return {
            "phase": "summary",
            "backend": self.args.backend,
            "minutes": self.args.minutes,
            "concurrency": self.args.concurrency,
            "calls_completed": self.completed,
            "load_growth": {k: last[k] - first[k] for k in KEYS},
            "rss_growth_ratio": round(rss_growth, 4),
            "idle_growth": {k: after[k] - before[k] for k in KEYS},
            "errors": len(self.errors),
            "failures": failures,
            "ok": not failures,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to run (3)")
    parser.add_argument("--concurrency", type=int, default=20, help="calls at once (20)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample (10)")
    parser.add_argument("--call-seconds", type=float, default=4.0, help="mean call length (4)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (2 intervals)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--tolerance", type=int, default=2, help="fds/tasks growth allowed (2)")
    parser.add_argument("--max-rss-growth", type=float, default=0.20, help="ratio (0.20)")
    parser.add_argument("--json", action="store_true", help="JSON lines, summary last")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 2 * args.interval
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soak = Soak(args)
    summary = anyio.run(soak.run, backend=args.backend)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"completed {summary['calls_completed']} calls on {args.backend}")
        print(f"growth under load (first sample after warm-up -> last): {summary['load_growth']}")
        print(f"growth idle (before -> after the run):                  {summary['idle_growth']}")
        for failure in summary["failures"]:
            print(f"FAIL: {failure}")
        print("OK" if summary["ok"] else "FAILED")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
