"""The client's public records: a session as the REST plane lists it, and the client's counters."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from ..call import ActiveCall
from ..exceptions import WSSConnectionError

__all__ = ["MAX_LATENCIES_KEPT", "ClientStats", "SessionRecord"]

#: Command latencies kept for :meth:`ClientStats.take_latencies` between two reads.
MAX_LATENCIES_KEPT = 10_000


@attrs.frozen
class SessionRecord:
    """One session as the REST plane lists it (``GET /public/v1/sessions``)."""

    id: str
    channel: str
    initiator: str
    state: str
    remote_address: str
    local_address: str
    opened_at: float | None
    closed_at: float | None

    @classmethod
    def from_json(cls, item: Any) -> SessionRecord:
        """Read one item of the list; missing keys default as the official client's do."""
        if not isinstance(item, dict):
            raise WSSConnectionError(f"session list item is not an object: {item!r:.100}")

        def text(key: str) -> str:
            value = item.get(key)
            return value if isinstance(value, str) else ""

        def when(key: str) -> float | None:
            value = item.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            return float(value)

        return cls(
            id=text("id"),
            channel=text("channel"),
            initiator=text("initiator"),
            state=text("state"),
            remote_address=text("remoteAddress"),
            local_address=text("localAddress"),
            opened_at=when("openedAt"),
            closed_at=when("closedAt"),
        )


class ClientStats:
    """What a client did so far, for monitoring (``telcoflow run`` exports it as Prometheus
    metrics): counters only grow; ``take_latencies`` hands over the command latencies measured
    since its last call."""

    def __init__(self) -> None:
        self.calls_taken = 0
        #: Calls ended for the agent, by termination reason.
        self.calls_ended: dict[str, int] = {}
        #: Claims that did not get the call (another process's, or ended meanwhile).
        self.claims_lost = 0
        self.reconnects = 0
        self.handler_errors = 0
        #: Audio of ended calls, in bytes: received (what the agent heard) and sent.
        self.audio_bytes_in = 0
        self.audio_bytes_out = 0
        self._latencies: deque[tuple[str, float]] = deque(maxlen=MAX_LATENCIES_KEPT)

    def record_call(self, call: ActiveCall) -> None:
        """Add an ended call's own counters."""
        self.audio_bytes_in += call.stats.bytes_received
        self.audio_bytes_out += call.stats.bytes_sent
        for command, samples in call.stats.command_latencies_ms.items():
            self._latencies.extend((command, ms / 1000) for ms in samples)

    def take_latencies(self) -> list[tuple[str, float]]:
        """``(command, seconds)`` of every command answered since the last call, oldest first
        (calls still live are counted when they end)."""
        taken = list(self._latencies)
        self._latencies.clear()
        return taken
