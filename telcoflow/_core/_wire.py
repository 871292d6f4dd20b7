"""What every codec shares: roles, the bounds on what a peer may send, JSON in and out, and the
field readers that turn a bad value into a :class:`RemoteProtocolError` naming frame and field.

Two reading disciplines, on purpose (PROTOCOL.md: "clients read ... leniently"):

- **strict** readers (:func:`field`) for what the sandbox receives from clients and for the few
  fields a client cannot do without (ids, URLs, tokens): a missing or mistyped value is an error;
- **lenient** readers (:func:`text`, :func:`number`, :func:`integer`) for the rest of what a
  client receives from a server: a missing value takes its default, as the official client's
  parsing does, while a value of the wrong type is still an error, never silently misread.

Every string is bounded (:data:`MAX_ID_CHARS`, :data:`MAX_URL_CHARS`) and so is every message
(:data:`MAX_TEXT_MESSAGE_CHARS`): nothing a peer sends can make a decoder allocate much.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from ._errors import RemoteProtocolError

__all__ = [
    "MAX_AUDIO_PAYLOAD_BYTES",
    "MAX_CREDIT_GRANT_BYTES",
    "MAX_ID_CHARS",
    "MAX_TEXT_MESSAGE_CHARS",
    "MAX_TIMEOUT_MS",
    "MAX_URL_CHARS",
    "Role",
]

#: Every text frame of the protocol is a small JSON object (the largest, ``call.in`` with a long
#: JWT, a few KiB). Anything past this is hostile or broken, and parsing it would cost memory.
MAX_TEXT_MESSAGE_CHARS = 64 * 1024

#: One binary frame carries 20 ms of audio (960 bytes at 24 kHz), and the official client sends
#: up to a whole grant in one; grants are at most 64 KiB, so no honest frame is larger.
MAX_AUDIO_PAYLOAD_BYTES = 64 * 1024

#: One ``buffer_request`` grants playout room of at most a few seconds; 16 MiB (almost three
#: minutes at 24 kHz) is far beyond any real server, and keeps the credit counter sane.
MAX_CREDIT_GRANT_BYTES = 16 * 1024 * 1024

#: Identifiers (session, call and command ids), addresses and codes are short.
MAX_ID_CHARS = 256

#: Media URLs and tokens: a hosted token is a JWT, which may run to a few KiB.
MAX_URL_CHARS = 8 * 1024

#: A command may wait at most this long for its response (the longest ring time plus margin).
MAX_TIMEOUT_MS = 10 * 60 * 1000


class Role(enum.Enum):
    """Which side of a connection a codec or protocol object plays."""

    CLIENT = "client"
    SERVER = "server"


def peer_of(role: Role) -> Role:
    """The other side."""
    return Role.SERVER if role is Role.CLIENT else Role.CLIENT


_T = TypeVar("_T")
_MISSING: Any = object()


def _check_str(frame: str, key: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise RemoteProtocolError(f"{frame} frame field {key!r} is longer than {limit} characters")
    return value


def field(
    data: Mapping[str, Any], frame: str, key: str, kind: type[_T], *, limit: int = MAX_ID_CHARS
) -> _T:
    """A required field of type ``kind`` (strings at most ``limit`` characters)."""
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise RemoteProtocolError(f"{frame} frame is missing field {key!r}")
    # bool is an int in Python; a protocol int is never a bool.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RemoteProtocolError(
            f"{frame} frame field {key!r} must be {kind.__name__}, not {type(value).__name__}"
        )
    if isinstance(value, str):
        _check_str(frame, key, value, limit)
    return value


def text(
    data: Mapping[str, Any], frame: str, key: str, default: str = "", *, limit: int = MAX_ID_CHARS
) -> str:
    """An optional string field: ``default`` when missing or null."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RemoteProtocolError(
            f"{frame} frame field {key!r} must be a string, not {type(value).__name__}"
        )
    return _check_str(frame, key, value, limit)


def optional_text(
    data: Mapping[str, Any], frame: str, key: str, *, limit: int = MAX_ID_CHARS
) -> str | None:
    """An optional string field: ``None`` when missing or null."""
    if data.get(key) is None:
        return None
    return text(data, frame, key, limit=limit)


def coerced_text(data: Mapping[str, Any], key: str, *, limit: int = MAX_ID_CHARS) -> str | None:
    """A field read as the official client reads codes and messages: any value but null becomes
    its string, cut to ``limit`` characters."""
    value = data.get(key)
    if value is None:
        return None
    result = value if isinstance(value, str) else json.dumps(value, default=str)[:limit]
    return result[:limit]


def number(data: Mapping[str, Any], frame: str, key: str, default: float = 0.0) -> float:
    """An optional finite number (int or float)."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteProtocolError(f"{frame} frame field {key!r} must be a number")
    try:
        result = float(value)
    except OverflowError:  # a JSON integer may have any number of digits
        raise RemoteProtocolError(f"{frame} frame field {key!r} is out of range") from None
    if not math.isfinite(result):
        raise RemoteProtocolError(f"{frame} frame field {key!r} must be finite")
    return result


def integer(data: Mapping[str, Any], key: str) -> int | None:
    """A whole number read as the official client reads ``buffer_request``'s fields
    (``int(x or 0)``): ints, whole floats and decimal strings; ``None`` for anything else or
    missing."""
    value = data.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        return int(text) if digits.isdigit() and len(digits) <= 18 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def bounded_int(data: Mapping[str, Any], frame: str, key: str, low: int, high: int) -> int:
    """A required integer within ``low..high``."""
    value = field(data, frame, key, int)
    if not low <= value <= high:
        raise RemoteProtocolError(f"{frame} frame field {key!r} is {value}, outside {low}..{high}")
    return value


def parse_json(raw: str) -> tuple[str, dict[str, Any]]:
    """A text frame's ``type`` and its whole JSON object."""
    if len(raw) > MAX_TEXT_MESSAGE_CHARS:
        raise RemoteProtocolError(
            f"text frame of {len(raw)} characters exceeds MAX_TEXT_MESSAGE_CHARS "
            f"({MAX_TEXT_MESSAGE_CHARS})"
        )
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"text frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"text frame must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("text frame has no string 'type'")
    return kind, obj


def envelope(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The ``data`` object of a frame that carries one (an absent or null one is empty)."""
    data = obj.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{kind} frame 'data' must be an object")
    return data


def dumps_client(obj: Mapping[str, Any]) -> str:
    """JSON as the official client writes it (``json.dumps`` defaults): what our client sends
    is, byte for byte, what the hosted service already sees from the official one."""
    return json.dumps(obj)


def dumps_server(obj: Mapping[str, Any]) -> str:
    """Compact JSON for what the sandbox sends."""
    return json.dumps(obj, separators=(",", ":"))
