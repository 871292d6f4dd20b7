"""PCM16 helpers shared by the sandbox and telcoflow.audio: sources (silence, tone, WAV), mixing,
WAV files, tone detection.

Pure Python (``array``), so the sandbox needs no numeric libraries. PCM16 little-endian mono.
"""

from __future__ import annotations

import io
import math
import sys
import wave
from array import array
from typing import Protocol

__all__ = [
    "AudioSource",
    "Silence",
    "Tone",
    "WavSource",
    "mix",
    "read_wav",
    "resample",
    "tone_level",
    "write_wav",
]

#: Tones play at a quarter of full scale, so that three parties mixed never clip.
TONE_AMPLITUDE = 0.25

_BIG_ENDIAN = sys.byteorder == "big"


def _samples(pcm: bytes) -> array[int]:
    a = array("h", pcm)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def _pcm(samples: array[int]) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


class AudioSource(Protocol):
    """Produces a party's voice one frame at a time."""

    def read(self, n_bytes: int) -> bytes:
        """The next ``n_bytes`` of PCM (silence once a non-looping source has ended)."""
        ...


class Silence:
    """A party that says nothing."""

    def read(self, n_bytes: int) -> bytes:
        return bytes(n_bytes)


class _Looped:
    def __init__(self, pcm: bytes, loop: bool) -> None:
        self._pcm = pcm
        self._loop = loop
        self._pos = 0

    def read(self, n_bytes: int) -> bytes:
        out = bytearray()
        while len(out) < n_bytes:
            if self._pos >= len(self._pcm):
                if not self._loop or not self._pcm:
                    out += bytes(n_bytes - len(out))
                    break
                self._pos = 0
            take = min(n_bytes - len(out), len(self._pcm) - self._pos)
            out += self._pcm[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)


class Tone(_Looped):
    """A continuous sine tone. One second is computed once and looped: exactly periodic for
    integer frequencies."""

    def __init__(self, freq_hz: float, sample_rate: int, amplitude: float = TONE_AMPLITUDE) -> None:
        super().__init__(tone_pcm(freq_hz, sample_rate, 1.0, amplitude), loop=True)
        self.freq_hz = freq_hz


class WavSource(_Looped):
    """PCM from a WAV file's content, converted to ``sample_rate``; looped or played once."""

    def __init__(self, pcm: bytes, loop: bool) -> None:
        super().__init__(pcm, loop)


def tone_pcm(
    freq_hz: float, sample_rate: int, seconds: float, amplitude: float = TONE_AMPLITUDE
) -> bytes:
    """``seconds`` of a sine tone at ``freq_hz`` as PCM16."""
    n = int(sample_rate * seconds)
    scale = amplitude * 32767
    step = 2 * math.pi * freq_hz / sample_rate
    return _pcm(array("h", (int(scale * math.sin(step * i)) for i in range(n))))


def mix(*frames: bytes) -> bytes:
    """Sum equal-length PCM16 frames with clipping; empty arguments are skipped."""
    present = [f for f in frames if f]
    if not present:
        return b""
    if len(present) == 1:
        return present[0]
    total = [sum(group) for group in zip(*(_samples(f) for f in present), strict=True)]
    return _pcm(array("h", (32767 if s > 32767 else -32768 if s < -32768 else s for s in total)))


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Linear-interpolation resampling; good enough for test voices, not for production audio."""
    if from_rate == to_rate or not pcm:
        return pcm
    src = _samples(pcm)
    n_out = len(src) * to_rate // from_rate
    ratio = from_rate / to_rate
    last = len(src) - 1
    out = array("h")
    for i in range(n_out):
        pos = i * ratio
        j = int(pos)
        frac = pos - j
        a = src[j]
        b = src[j + 1] if j < last else a
        out.append(int(a + (b - a) * frac))
    return _pcm(out)


def read_wav(data: bytes, sample_rate: int | None = None) -> tuple[bytes, int]:
    """PCM16 mono from a WAV file's bytes (stereo is averaged), optionally resampled.

    Returns ``(pcm, rate)``. Raises ``ValueError`` for anything but 16-bit PCM WAV.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable WAV file: {exc}") from None
    if width != 2:
        raise ValueError(f"WAV must be 16-bit PCM, not {8 * width}-bit")
    if channels == 2:
        s = _samples(frames)
        frames = _pcm(array("h", ((s[i] + s[i + 1]) // 2 for i in range(0, len(s) - 1, 2))))
    elif channels != 1:
        raise ValueError(f"WAV must be mono or stereo, not {channels} channels")
    if sample_rate is not None and sample_rate != rate:
        return resample(frames, rate, sample_rate), sample_rate
    return frames, rate


def write_wav(pcm: bytes, sample_rate: int) -> bytes:
    """A WAV file (PCM16 mono) holding ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def tone_level(pcm: bytes, sample_rate: int, freq_hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``freq_hz`` component of ``pcm`` (Goertzel).

    A pure tone written by :class:`Tone` measures about ``TONE_AMPLITUDE``; silence measures 0.
    """
    samples = _samples(pcm)
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq_hz / sample_rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n / 32768


def rms(pcm: bytes) -> float:
    """Root-mean-square level (0..1 of full scale)."""
    samples = _samples(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
