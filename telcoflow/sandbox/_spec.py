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

from ._pcm import AudioSource, Silence, Tone, WavSource, read_wav, wav_info

__all__ = ["CallSpec", "CalleeSpec", "NumberSpec", "Voice"]

#: Longest delay (answer, hang-up, ring) the sandbox accepts: an hour, far past any test's need
#: (the protocol's longest ring time is 120 s) and short enough to catch a value in ms by mistake.
MAX_DELAY_S = 3600.0

DEFAULT_FROM = "+6590000001"
#: The default connector's phone number: what a simulated caller dials unless told otherwise.
DEFAULT_TO = "+6590000002"
#: How long the called number's own phone rings before a call counts as missed (for
#: connections whose call flow is ``MISSED_ONLY``), unless the call says otherwise.
DEFAULT_MISSED_AFTER_S = 20.0


@attrs.frozen
class Voice:
    """A party's audio: a tone, a WAV's PCM (looped or once) or silence."""

    tone_hz: float | None = None
    wav: bytes | None = attrs.field(
        default=None, repr=lambda w: "None" if w is None else f"<{len(w)} bytes>"
    )
    loop: bool = True
    #: The WAV's PCM converted to each rate asked for so far (made once, off the event loop).
    _converted: dict[int, bytes] = attrs.field(
        factory=dict, eq=False, hash=False, repr=False, init=False
    )

    @classmethod
    def tone(cls, hz: float) -> Voice:
        return cls(tone_hz=hz)

    @classmethod
    def silence(cls) -> Voice:
        return cls()

    @classmethod
    def from_wav(cls, data: bytes, loop: bool = True) -> Voice:
        """A WAV file's voice; ``ValueError`` now (not when the call starts) for a bad one."""
        wav_info(data)
        return cls(wav=data, loop=loop)

    @property
    def needs_conversion(self) -> bool:
        """True for a WAV voice: its PCM must be converted (in a worker thread) for a rate."""
        return self.wav is not None

    def convert(self, sample_rate: int) -> bytes:
        """The WAV's PCM at ``sample_rate`` (slow for long voices: call it off the loop)."""
        assert self.wav is not None
        pcm = self._converted.get(sample_rate)
        if pcm is None:
            pcm = self._converted[sample_rate] = read_wav(self.wav, sample_rate)[0]
        return pcm

    def source(self, sample_rate: int) -> AudioSource:
        """A source producing this voice at ``sample_rate`` (a WAV's, once converted)."""
        if self.tone_hz is not None:
            return Tone(self.tone_hz, sample_rate)
        if self.wav is not None:
            return WavSource(self.convert(sample_rate), self.loop)
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
        silence = value.get("silence", False)
        if not isinstance(silence, bool):
            raise ValueError(f"{field}.silence must be a boolean")
        if silence:
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
    if not (0 <= value <= MAX_DELAY_S and math.isfinite(value)):
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
    def from_json(cls, value: Any, *, default_hz: float = 880, name: str = "callee") -> CalleeSpec:
        """Parse a callee object of the HTTP API; ``ValueError`` names the bad field."""
        if value is None:
            return cls(voice=Voice.tone(default_hz))
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be an object")
        answer = value.get("answer", True)
        decline = value.get("decline", False)
        if not isinstance(answer, bool) or not isinstance(decline, bool):
            raise ValueError(f"{name}.answer and {name}.decline must be booleans")
        after = _delay(value.get("answer_after_s", 1.0), f"{name}.answer_after_s", allow_none=False)
        assert after is not None
        return cls(after, answer, decline, Voice.from_json(value, name, default_hz))


@attrs.frozen
class NumberSpec:
    """How a number an agent dials (``client.dial``) behaves: answer after a delay and speak,
    never answer, or decline; and hang up after a while, or never."""

    answer_after_s: float = 1.0
    answer: bool = True
    decline: bool = False
    voice: Voice = attrs.field(factory=lambda: Voice.tone(440))
    hangup_after_s: float | None = None

    @classmethod
    def from_json(cls, value: Any) -> NumberSpec:
        """Parse a ``PUT /sandbox/numbers/{e164}`` body; ``ValueError`` names the bad field."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("body must be a JSON object")
        callee = CalleeSpec.from_json(value, default_hz=440, name="number")
        hangup = _delay(value.get("hangup_after_s"), "hangup_after_s", allow_none=True)
        return cls(callee.answer_after_s, callee.answer, callee.decline, callee.voice, hangup)


@attrs.frozen
class CallSpec:
    """A simulated inbound call. ``to_number`` None: the connector's own number."""

    from_number: str = DEFAULT_FROM
    to_number: str | None = None
    caller: Voice = attrs.field(factory=lambda: Voice.tone(440))
    caller_hangup_after_s: float | None = None
    callee: CalleeSpec = attrs.field(factory=CalleeSpec)
    connector_uuid: str | None = None
    #: For ``MISSED_ONLY`` call flows: how long the called number's own phone (the callee)
    #: rings before the call counts as missed and is notified.
    missed_after_s: float = DEFAULT_MISSED_AFTER_S

    def validate(self) -> None:
        """``ValueError`` naming the field, for a spec built in Python with a bad voice (the
        HTTP API's bodies are checked as they are parsed)."""
        for name, voice in (("caller", self.caller), ("callee", self.callee.voice)):
            if voice.wav is not None:
                try:
                    wav_info(voice.wav)
                except ValueError as exc:
                    raise ValueError(f"{name}.wav: {exc}") from None

    @classmethod
    def from_json(cls, body: Any) -> CallSpec:
        """Parse a ``POST /sandbox/calls`` body; ``ValueError`` names the bad field."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        numbers: dict[str, str | None] = {}
        for key, default in (("from", DEFAULT_FROM), ("to", None)):
            value = body.get(key, default)
            if value is None and default is None:
                numbers[key] = None
                continue
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ValueError(f"{key} must be a phone number string")
            numbers[key] = value
        connector = body.get("connector_uuid")
        if connector is not None and not isinstance(connector, str):
            raise ValueError("connector_uuid must be a string")
        from_number = numbers["from"]
        assert from_number is not None
        missed = _delay(
            body.get("missed_after_s", DEFAULT_MISSED_AFTER_S), "missed_after_s", allow_none=False
        )
        assert missed is not None
        return cls(
            from_number=from_number,
            to_number=numbers["to"],
            missed_after_s=missed,
            caller=Voice.from_json(body.get("caller"), "caller", 440),
            caller_hangup_after_s=_delay(
                body.get("caller_hangup_after_s"), "caller_hangup_after_s", allow_none=True
            ),
            callee=CalleeSpec.from_json(body.get("callee")),
            connector_uuid=connector,
        )
