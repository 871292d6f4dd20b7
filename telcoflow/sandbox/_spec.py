"""What a simulated call is made of: the caller's voice, the callee's behaviour, hang-up times.

Parsed from the HTTP API's JSON bodies (SANDBOX.md) with errors that name the field; the Python
API builds the same objects.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import attrs

from .._pcm import AudioSource, Silence, Tone, WavSource, read_wav

__all__ = ["CallSpec", "CalleeSpec", "Voice"]

#: Longest ring or answer delay the sandbox accepts, matching the protocol's longest ring time.
MAX_DELAY_S = 3600.0

DEFAULT_FROM = "+6590000001"
DEFAULT_TO = "+6590000002"


@attrs.frozen
class Voice:
    """A party's audio: a tone, a WAV's PCM (looped or once) or silence."""

    tone_hz: float | None = None
    wav: bytes | None = attrs.field(
        default=None, repr=lambda w: "None" if w is None else f"<{len(w)} bytes>"
    )
    loop: bool = True

    @classmethod
    def tone(cls, hz: float) -> Voice:
        return cls(tone_hz=hz)

    @classmethod
    def silence(cls) -> Voice:
        return cls()

    @classmethod
    def from_wav(cls, data: bytes, loop: bool = True) -> Voice:
        read_wav(data)  # validate now, not when the call starts
        return cls(wav=data, loop=loop)

    def source(self, sample_rate: int) -> AudioSource:
        """A source producing this voice at ``sample_rate``."""
        if self.tone_hz is not None:
            return Tone(self.tone_hz, sample_rate)
        if self.wav is not None:
            pcm, _ = read_wav(self.wav, sample_rate)
            return WavSource(pcm, self.loop)
        return Silence()

    @classmethod
    def from_json(cls, value: Any, field: str, default_hz: float) -> Voice:
        if value is None:
            return cls.tone(default_hz)
        if not isinstance(value, dict):
            raise ValueError(f"{field} must be an object")
        loop = value.get("loop", True)
        if not isinstance(loop, bool):
            raise ValueError(f"{field}.loop must be a boolean")
        if "wav_base64" in value:
            raw = value["wav_base64"]
            if not isinstance(raw, str):
                raise ValueError(f"{field}.wav_base64 must be a base64 string")
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{field}.wav_base64 is not valid base64") from None
            try:
                return cls.from_wav(data, loop)
            except ValueError as exc:
                raise ValueError(f"{field}.wav_base64: {exc}") from None
        if value.get("silence"):
            return cls.silence()
        hz = value.get("tone_hz", default_hz)
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not 0 < hz < 12000:
            raise ValueError(f"{field}.tone_hz must be a frequency in Hz (0..12000)")
        return cls.tone(float(hz))


def _delay(value: Any, field: str, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number of seconds")
    if not (math.isfinite(value) and 0 <= value <= MAX_DELAY_S):
        raise ValueError(f"{field} must be within 0..{MAX_DELAY_S:g} seconds")
    return float(value)


@attrs.frozen
class CalleeSpec:
    """What the callee does when the agent connects the call: answer after a delay, never
    answer, or decline."""

    answer_after_s: float = 1.0
    answer: bool = True
    decline: bool = False
    voice: Voice = attrs.field(factory=lambda: Voice.tone(880))

    @classmethod
    def from_json(cls, value: Any) -> CalleeSpec:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("callee must be an object")
        answer = value.get("answer", True)
        decline = value.get("decline", False)
        if not isinstance(answer, bool) or not isinstance(decline, bool):
            raise ValueError("callee.answer and callee.decline must be booleans")
        after = _delay(value.get("answer_after_s", 1.0), "callee.answer_after_s", allow_none=False)
        assert after is not None
        return cls(after, answer, decline, Voice.from_json(value, "callee", 880))


@attrs.frozen
class CallSpec:
    """A simulated inbound call."""

    from_number: str = DEFAULT_FROM
    to_number: str = DEFAULT_TO
    caller: Voice = attrs.field(factory=lambda: Voice.tone(440))
    caller_hangup_after_s: float | None = None
    callee: CalleeSpec = attrs.field(factory=CalleeSpec)
    connector_uuid: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> CallSpec:
        """Parse a ``POST /sandbox/calls`` body; ``ValueError`` names the bad field."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        numbers = {}
        for key, default in (("from", DEFAULT_FROM), ("to", DEFAULT_TO)):
            value = body.get(key, default)
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ValueError(f"{key} must be a phone number string")
            numbers[key] = value
        connector = body.get("connector_uuid")
        if connector is not None and not isinstance(connector, str):
            raise ValueError("connector_uuid must be a string")
        return cls(
            from_number=numbers["from"],
            to_number=numbers["to"],
            caller=Voice.from_json(body.get("caller"), "caller", 440),
            caller_hangup_after_s=_delay(
                body.get("caller_hangup_after_s"), "caller_hangup_after_s", allow_none=True
            ),
            callee=CalleeSpec.from_json(body.get("callee")),
            connector_uuid=connector,
        )
