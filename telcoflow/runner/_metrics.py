"""The agent's Prometheus metrics, with ``prometheus_client`` (the field's library: the text
format is not written by hand).

A worker keeps its metrics in a registry of its own; under ``--workers`` every worker writes them
to the multiprocess directory the supervisor gives it (``PROMETHEUS_MULTIPROC_DIR``), and the
supervisor serves their sum. Counters are fed from the client's :class:`~telcoflow.ClientStats`
by differences (:meth:`AgentMetrics.sync`), so the SDK itself needs no metrics library.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from ..client import TelcoflowClient

__all__ = ["AgentMetrics", "aggregated_metrics", "multiprocess_dir"]

#: Command round trips: most are a few milliseconds; ``call.connect`` waits for a callee.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
#: How late the event loop runs a timer: a healthy loop is under a millisecond.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0)


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this worker, when it runs under a supervisor."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class AgentMetrics:
    """One worker's metrics; ``sync(client)`` brings them up to date."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        mode: dict[str, Any] = {"multiprocess_mode": "livesum"} if multiprocess_dir() else {}
        self.active_calls = Gauge(
            "telcoflow_active_calls", "Calls with their media open now", registry=r, **mode
        )
        self.ready = Gauge(
            "telcoflow_ready",
            "1 while the control connection is up and the agent is not draining",
            registry=r,
            **mode,
        )
        self.calls_taken = Counter("telcoflow_calls_taken", "Calls taken", registry=r)
        self.calls_ended = Counter(
            "telcoflow_calls_ended", "Calls ended for the agent", ["reason"], registry=r
        )
        self.claims_lost = Counter(
            "telcoflow_claims_lost",
            "Calls claimed but taken by another process or ended meanwhile",
            registry=r,
        )
        self.handler_errors = Counter(
            "telcoflow_handler_errors", "Application handlers that raised", registry=r
        )
        self.reconnects = Counter(
            "telcoflow_reconnects", "Control connections re-established", registry=r
        )
        self.audio_bytes = Counter(
            "telcoflow_audio_bytes", "Audio of ended calls", ["direction"], registry=r
        )
        self.command_latency = Histogram(
            "telcoflow_command_latency_seconds",
            "Round trip of answered media-plane commands",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "telcoflow_event_loop_lag_seconds",
            "How late the event loop ran a 100 ms timer",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._seen: dict[str, float] = {}

    def _add(self, key: str, counter: Any, value: float) -> None:
        delta = value - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = value

    def sync(self, client: TelcoflowClient) -> None:
        """Bring the metrics up to date with ``client``'s counters and state."""
        stats = client.stats
        self.active_calls.set(len(client.calls))
        self.ready.set(1 if client.connected and not client.draining else 0)
        self._add("taken", self.calls_taken, stats.calls_taken)
        self._add("lost", self.claims_lost, stats.claims_lost)
        self._add("errors", self.handler_errors, stats.handler_errors)
        self._add("reconnects", self.reconnects, stats.reconnects)
        self._add("in", self.audio_bytes.labels("in"), stats.audio_bytes_in)
        self._add("out", self.audio_bytes.labels("out"), stats.audio_bytes_out)
        for reason, n in stats.calls_ended.items():
            self._add(f"ended:{reason}", self.calls_ended.labels(reason), n)
        for command, seconds in stats.take_latencies():
            self.command_latency.labels(command).observe(seconds)

    def stopped(self) -> None:
        """The worker is going away: it is not ready and holds no calls any more."""
        self.ready.set(0)
        self.active_calls.set(0)

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return bytes(generate_latest(self.registry))


def aggregated_metrics(directory: str) -> bytes:
    """The sum of every worker's metrics in a multiprocess directory, in the text format."""
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return bytes(generate_latest(registry))


def mark_dead(pid: int, directory: str) -> None:
    """A worker process is gone: its live gauges stop counting."""
    _multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
