"""What the benchmark's processes print: ``ready``, a ``window`` line per SIGUSR1, ``done``.

Standard library only: the official SDK's client imports it from its own virtual environment.
Each line is one JSON object on stdout; ``bench.py`` reads them.
"""

from __future__ import annotations

import gc
import json
import resource
import time
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
