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
from typing import Any, Protocol

__all__ = [
    "AudioSource",
    "Silence",
    "Tone",
    "WavSource",
    "mix",
    "read_wav",
    "resample",
    "tone_level",
    "wav_header_for",
    "wav_info",
    "write_wav",
]

#: Tones play at a quarter of full scale, so that three parties mixed never clip.
TONE_AMPLITUDE = 0.25

#: Sample rates a WAV voice may have: anything a real recording uses (8 kHz telephony to 192 kHz
#: studio). Outside that it is a broken or hostile header (0 Hz divides by zero; 1 Hz makes a
#: few bytes into hours of audio).
MIN_WAV_RATE = 4000
MAX_WAV_RATE = 192_000
#: A voice is at most ten minutes long, so that converting it cannot make more than
#: ten minutes of audio at the call's rate (29 MB at 24 kHz).
MAX_WAV_SECONDS = 600.0

_NUMPY: list[Any] = []


def _numpy() -> Any:
    """numpy if it can be imported (it makes resampling and down-mixing fast), else None: the
    pure-Python path is the fallback. Imported on first use, never at import time."""
    if not _NUMPY:
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy is a test dependency
            _NUMPY.append(None)
        else:
            _NUMPY.append(numpy)
    return _NUMPY[0]


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
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {from_rate} -> {to_rate}")
    if from_rate == to_rate or not pcm:
        return pcm
    _np = _numpy()
    if _np is not None:
        src_np = _np.frombuffer(pcm, dtype="<i2").astype(_np.float64)
        n = len(src_np) * to_rate // from_rate
        positions = _np.arange(n, dtype=_np.float64) * (from_rate / to_rate)
        out_np = _np.interp(positions, _np.arange(len(src_np)), src_np)
        return bytes(out_np.astype("<i2").tobytes())
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


def wav_info(data: bytes) -> tuple[int, int, float]:
    """A WAV file's ``(channels, rate, seconds)``, read from its header only; ``ValueError``
    naming what is wrong for anything but a sane 16-bit PCM mono or stereo WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable WAV file: {exc}") from None
    if width != 2:
        raise ValueError(f"WAV must be 16-bit PCM, not {8 * width}-bit")
    if channels not in (1, 2):
        raise ValueError(f"WAV must be mono or stereo, not {channels} channels")
    if not MIN_WAV_RATE <= rate <= MAX_WAV_RATE:
        raise ValueError(
            f"WAV sample rate {rate} Hz is not supported ({MIN_WAV_RATE}..{MAX_WAV_RATE} Hz)"
        )
    seconds = frames / rate
    if seconds > MAX_WAV_SECONDS:
        raise ValueError(f"WAV is {seconds:.0f} s long; at most {MAX_WAV_SECONDS:g} s")
    return channels, rate, seconds


def read_wav(data: bytes, sample_rate: int | None = None) -> tuple[bytes, int]:
    """PCM16 mono from a WAV file's bytes (stereo is averaged), optionally resampled.

    Returns ``(pcm, rate)``. Raises ``ValueError`` as :func:`wav_info` does. Resampling a long
    voice takes a while: the sandbox does it in a worker thread.
    """
    channels, rate, _ = wav_info(data)
    with wave.open(io.BytesIO(data), "rb") as w:
        frames = w.readframes(w.getnframes())
    frames = frames[: len(frames) & ~(2 * channels - 1)]  # whole frames only
    if channels == 2:
        _np = _numpy()
        if _np is not None:
            both = _np.frombuffer(frames, dtype="<i2").astype(_np.int32).reshape(-1, 2)
            frames = bytes(both.sum(axis=1).__floordiv__(2).astype("<i2").tobytes())
        else:  # pragma: no cover - numpy is a test dependency
            s = _samples(frames)
            frames = _pcm(array("h", ((s[i] + s[i + 1]) // 2 for i in range(0, len(s) - 1, 2))))
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


def wav_header_for(empty_wav: bytes, data_bytes: int) -> bytes:
    """The 44-byte header of ``empty_wav`` (a WAV with no frames, as :func:`write_wav` makes)
    rewritten for ``data_bytes`` of PCM: what to send before streaming that PCM."""
    header = bytearray(empty_wav[:44])
    header[4:8] = (36 + data_bytes).to_bytes(4, "little")
    header[40:44] = data_bytes.to_bytes(4, "little")
    return bytes(header)


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
