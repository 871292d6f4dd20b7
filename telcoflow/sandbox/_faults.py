"""Faults on demand (``POST /sandbox/faults``): what real deployments see, reproducible offline.

Each fault is parsed from JSON into a typed object with errors that name the field; the sandbox
applies it (see :meth:`Sandbox.inject_fault`).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = ["CommandFault", "Fault", "parse_fault"]

KINDS = (
    "drop_control",
    "drop_media",
    "delay_command",
    "fail_command",
    "malformed_frame",
    "refuse_connections",
)

#: The longest delay or refusal window a fault may ask for; longer ones are surely mistakes.
MAX_FAULT_SECONDS = 600.0

#: What a malformed frame carries unless the request says otherwise: not JSON at all.
DEFAULT_MALFORMED = '{"type": "call.incoming", "data": {"callId": '


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
    if kind == "drop_media" and fields["call_id"] is None:
        raise ValueError("drop_media needs a call_id")
    if kind in ("delay_command", "refuse_connections"):
        fields["seconds"] = _seconds(body, required=True)
    if kind == "fail_command":
        fields["error_code"] = _str(body, "error_code") or "INTERNAL_ERROR"
    if kind == "malformed_frame":
        target = body.get("target", "control")
        if target not in ("control", "media"):
            raise ValueError("target must be 'control' or 'media'")
        if target == "media" and fields["call_id"] is None:
            raise ValueError("a malformed media frame needs a call_id")
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
