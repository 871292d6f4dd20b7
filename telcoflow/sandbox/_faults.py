"""Faults on demand (``POST /sandbox/faults``): what real deployments see, reproducible offline.

Each fault is parsed from JSON into a typed object with errors that name the field; the sandbox
applies it (see :meth:`Sandbox.inject_fault`). :class:`FaultInjector` holds the faults that act
later: command faults waiting for their command, and a window of refused connections.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = ["CommandFault", "Fault", "FaultInjector", "parse_fault"]

KINDS = (
    "drop_control",
    "drop_media",
    "delay_command",
    "fail_command",
    "malformed_frame",
    "refuse_connections",
    "call_error",
    "hang_setup",
    "hang_media",
    "flood",
)

#: Frames a ``flood`` sends at most (a million tiny frames is a few MB on the wire).
MAX_FLOOD_FRAMES = 1_000_000

#: The longest delay or refusal window a fault may ask for; longer ones are surely mistakes.
MAX_FAULT_SECONDS = 600.0

#: What a malformed frame carries unless the request says otherwise: not JSON at all.
DEFAULT_MALFORMED = '{"type": "session.notify", "sessionId": '


@attrs.frozen
class Fault:
    """One parsed fault request."""

    kind: str
    call_id: str | None = None
    connection_id: str | None = None
    connector_uuid: str | None = None
    command: str | None = None
    seconds: float = 0.0
    error_code: str = "INTERNAL_ERROR"
    target: str = "control"
    payload: str | bytes = DEFAULT_MALFORMED
    status: int = 503
    error_message: str | None = None
    #: ``hang_setup``: read the client's frames (True) or nothing at all, a dead server (False).
    read: bool = True
    #: ``flood``: how many copies of ``payload`` to send, as fast as the connection takes them.
    count: int = 1


@attrs.define
class CommandFault:
    """A pending fault on the next matching command: ``delay`` its response or ``fail`` it."""

    kind: str
    seconds: float
    error_code: str
    call_id: str | None
    command: str | None

    def matches(self, call_id: str, command: str) -> bool:
        return (self.call_id in (None, call_id)) and (self.command in (None, command))


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _seconds(body: dict[str, Any], required: bool) -> float:
    value = body.get("seconds")
    if value is None and not required:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("seconds must be a number")
    if not (math.isfinite(value) and 0 <= value <= MAX_FAULT_SECONDS):
        raise ValueError(f"seconds must be within 0..{MAX_FAULT_SECONDS:g}")
    return float(value)


def parse_fault(body: Any) -> Fault:
    """Parse a fault request; ``ValueError`` names what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object with a 'kind'")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    fields: dict[str, Any] = {
        "kind": kind,
        "call_id": _str(body, "call_id"),
        "connection_id": _str(body, "connection_id"),
        "connector_uuid": _str(body, "connector_uuid"),
        "command": _str(body, "command"),
    }
    if kind in ("drop_media", "call_error") and fields["call_id"] is None:
        raise ValueError(f"{kind} needs a call_id")
    if kind == "call_error":
        fields["error_code"] = _str(body, "error_code") or "TTS_SESSION_ERROR"
        fields["error_message"] = _str(body, "error_message")
    if kind in ("delay_command", "refuse_connections", "hang_setup", "hang_media"):
        fields["seconds"] = _seconds(body, required=True)
    if kind == "hang_setup":
        read = body.get("read", True)
        if not isinstance(read, bool):
            raise ValueError("read must be a boolean")
        fields["read"] = read
    if kind == "fail_command":
        fields["error_code"] = _str(body, "error_code") or "INTERNAL_ERROR"
    if kind == "flood":
        count = body.get("count", 1000)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= MAX_FLOOD_FRAMES
        ):
            raise ValueError(f"count must be an integer within 1..{MAX_FLOOD_FRAMES}")
        fields["count"] = count
    if kind in ("malformed_frame", "flood"):
        target = body.get("target", "control")
        if target not in ("control", "media"):
            raise ValueError("target must be 'control' or 'media'")
        if target == "media" and fields["call_id"] is None:
            raise ValueError(f"a {kind} on media needs a call_id")
        fields["target"] = target
        payload = body.get("payload", DEFAULT_MALFORMED)
        if isinstance(payload, dict) and isinstance(payload.get("hex"), str):
            try:
                payload = bytes.fromhex(payload["hex"])
            except ValueError:
                raise ValueError("payload.hex is not hexadecimal") from None
        elif not isinstance(payload, str):
            raise ValueError('payload must be a string (a text frame) or {"hex": ...} (binary)')
        fields["payload"] = payload
    if kind == "refuse_connections":
        status = body.get("status", 503)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400..599)")
        fields["status"] = status
    return Fault(**fields)


class FaultInjector:
    """The faults that act later: command faults waiting for their command, refusals, and
    connections held without an answer (``hang_setup``, ``hang_media``)."""

    def __init__(self) -> None:
        self._command_faults: list[CommandFault] = []
        self._refuse_until = 0.0
        self._refuse_status = 503
        self._hang_until = {"setup": 0.0, "media": 0.0}
        self.hang_reads = True
        #: Faults injected so far, by kind (for reports).
        self.injected: dict[str, int] = {}
        #: Connections held by a hang fault, and those of them the client gave up, by kind
        #: ("setup", "media").
        self.held = {"setup": 0, "media": 0}
        self.released = {"setup": 0, "media": 0}

    def hang_for(self, what: str, now: float, seconds: float, read: bool = True) -> None:
        self._hang_until[what] = now + seconds
        if what == "setup":
            self.hang_reads = read

    def hanging(self, what: str, now: float) -> bool:
        """Whether a new connection of this kind (setup, media) is to be held unanswered."""
        return now < self._hang_until[what]

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def arm_command_fault(self, fault: Fault) -> str:
        kind = "delay" if fault.kind == "delay_command" else "fail"
        self._command_faults.append(
            CommandFault(kind, fault.seconds, fault.error_code, fault.call_id, fault.command)
        )
        return kind

    def take_command_fault(self, call_id: str, command: str) -> CommandFault | None:
        """The first pending command fault matching this command, removed; or None."""
        for i, fault in enumerate(self._command_faults):
            if fault.matches(call_id, command):
                return self._command_faults.pop(i)
        return None

    def refuse_for(self, now: float, seconds: float, status: int) -> None:
        self._refuse_until = now + seconds
        self._refuse_status = status

    def refusing(self, now: float) -> int | None:
        """The status to refuse a new connection with now, or None."""
        return self._refuse_status if now < self._refuse_until else None
