"""What the benchmark's processes print: ``ready``, a ``window`` line per SIGUSR1, ``done``.

Standard library only: the official SDK's client imports it from its own virtual environment.
Each line is one JSON object on stdout; ``bench.py`` reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["LAG_PROBE_S", "Probe", "Tally", "print_done", "print_ready", "print_window"]

#: The event-loop lag probe sleeps this long and records how late it wakes up.
LAG_PROBE_S = 0.01
#: A stall longer than one 20 ms audio frame can make the caller hear a gap.
FRAME_S = 0.02


class Probe:
    """This process's event-loop lag and garbage-collector pauses, per measurement window.

    The lag is fed by a task in the process's own framework that sleeps ``LAG_PROBE_S`` at a time
    and calls ``lag(late_s)``; the collector is timed through ``gc.callbacks``. ``window()``
    returns what was seen since the previous call (or the start) and starts afresh.
    """

    def __init__(self) -> None:
        self._gc_start = 0.0
        self.reset()
        gc.callbacks.append(self._gc)

    def reset(self) -> None:
        self.lags: list[float] = []
        self.collections = [0, 0, 0]
        self.gc_total_s = 0.0
        self.gc_max_s = 0.0

    def lag(self, late_s: float) -> None:
        self.lags.append(late_s)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_start
        self.collections[info["generation"]] += 1
        self.gc_total_s += pause
        self.gc_max_s = max(self.gc_max_s, pause)

    def window(self) -> dict[str, Any]:
        lags = sorted(self.lags)

        def pct(p: float) -> float | None:
            return round(1000 * lags[min(len(lags) - 1, int(p * len(lags)))], 2) if lags else None

        seen = {
            "lag_p50_ms": pct(0.5),
            "lag_p99_ms": pct(0.99),
            "lag_max_ms": pct(1.0),
            "lags_over_frame": sum(1 for x in lags if x > FRAME_S),
            "gc_collections": self.collections,
            "gc_total_ms": round(self.gc_total_s * 1000, 1),
            "gc_max_ms": round(self.gc_max_s * 1000, 2),
        }
        self.reset()
        return seen


class Tally:
    """Counts of what a client did, for the ``done`` line."""

    def __init__(self) -> None:
        self.calls = 0
        self.answered = 0
        self.ended = 0
        self.chunks_in = 0
        self.bytes_out = 0
        self.errors: list[str] = []

    def error(self, what: str) -> None:
        if len(self.errors) < 20:  # enough to diagnose; a storm must not eat memory
            self.errors.append(what)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "answered": self.answered,
            "ended": self.ended,
            "chunks_in": self.chunks_in,
            "bytes_out": self.bytes_out,
            "errors": self.errors,
        }


def print_ready(kind: str) -> None:
    print(json.dumps({"event": "ready", "kind": kind, "t": time.time()}), flush=True)


def print_window(probe: Probe) -> None:
    """What the probe saw since the previous window (``bench.py`` asks with SIGUSR1)."""
    print(json.dumps({"event": "window", **probe.window()}), flush=True)


def print_done(kind: str, tally: Tally) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = {
        "event": "done",
        "kind": kind,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "maxrss_kib": usage.ru_maxrss,
        **tally.to_json(),
    }
    print(json.dumps(line), flush=True)


Control = Callable[[argparse.Namespace, Tally, "set[asyncio.Task[None]]"], Awaitable[None]]


async def measure_lag(probe: Probe) -> None:
    """Record how late the asyncio loop wakes a sleeper: the client's scheduling lag."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        probe.lag(loop.time() - t - LAG_PROBE_S)


async def _run(control: Control, args: argparse.Namespace, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe = Probe()
    loop.add_signal_handler(signal.SIGUSR1, print_window, probe)
    tasks: set[asyncio.Task[None]] = set()
    ctl = asyncio.create_task(control(args, tally, tasks))
    prober = asyncio.create_task(measure_lag(probe))
    await stop.wait()
    for task in [ctl, prober, *tasks]:
        task.cancel()
    await asyncio.gather(ctl, prober, *tasks, return_exceptions=True)


def serve_asyncio(kind: str, control: Control, description: str, argv: list[str] | None) -> int:
    """The main of a plain-asyncio benchmark client: parse the common options, run ``control``
    until SIGTERM/SIGINT (SIGUSR1 prints a window sample), then print the final report."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sandbox-api-key")
    parser.add_argument("--connector-uuid", default="00000000-0000-4000-8000-000000000001")
    parser.add_argument("--sample-rate", type=int, default=24000)
    args = parser.parse_args(argv)
    tally = Tally()
    asyncio.run(_run(control, args, tally))
    print_done(kind, tally)
    return 0
