"""What a call is (``CallDetails``, as the server described it) and what it did (``CallStats``).

Plain records, shared by the call's parts: each part adds to the counters of its own direction.
"""

from __future__ import annotations

import attrs

from .._core import Direction

__all__ = ["CallDetails", "CallStats"]


@attrs.frozen
class CallDetails:
    """What the server told us about a call (``call.in``, and the notification before it)."""

    call_id: str
    session_id: str
    from_number: str
    to_number: str
    direction: str = Direction.INBOUND.value
    org_uuid: str = ""
    created_at: float = 0.0


class CallStats:
    """Counters of one call: audio each way, drops, protocol errors, command latencies."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "command_latencies_ms",
        "dropped_inbound_bytes",
        "dropped_inbound_chunks",
        "frames_received",
        "ignored_frames",
        "protocol_errors",
    )

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_received = 0
        self.dropped_inbound_chunks = 0
        self.dropped_inbound_bytes = 0
        #: Audio on channels this call does not read (not logged: a server may send them all).
        self.ignored_frames = 0
        self.protocol_errors = 0
        #: Round-trip time of each answered command, in milliseconds, by command name.
        self.command_latencies_ms: dict[str, list[float]] = {}

    def latency(self, command: str) -> dict[str, float] | None:
        """``{"count", "p50", "max"}`` of a command's latencies (ms), or None if never answered."""
        samples = sorted(self.command_latencies_ms.get(command, ()))
        if not samples:
            return None
        return {"count": len(samples), "p50": samples[len(samples) // 2], "max": samples[-1]}

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)}"
            for name in self.__slots__
            if name != "command_latencies_ms"
        )
        return f"CallStats({fields})"
