"""The sandbox's audio: the parties' voices (silence, a tone, a WAV file) and what it does with
them (convert a WAV voice to the call's rate, mix, record as WAV).

The arithmetic is :mod:`telcoflow.audio`'s unchecked kernels, so the sandbox and the public
helpers cannot drift apart; what is the sandbox's own is here: sources that play frame by frame,
the conversion of a voice to the call's rate (linear interpolation, good enough for test voices
and free of the ``audio`` extra) and WAV headers for recordings streamed as they grow.

The names ``tone_pcm``, ``mix``, ``rms``, ``tone_level``, ``read_wav``, ``write_wav`` and
``resample`` keep the contracts they had as ``telcoflow.sandbox``'s public helpers, which are
now deprecated aliases of them (see ``telcoflow.sandbox.__getattr__``). Pure Python (``array``,
numpy when installed), PCM16 little-endian mono.
"""

from __future__ import annotations

from array import array
from typing import Protocol

from ..audio import (
    TONE_AMPLITUDE,
    _decode_wav,
    _from_samples,
    _goertzel,
    _numpy_if_installed,
    _samples,
    _sine,
)
from ..audio import _encode_wav as write_wav
from ..audio import _mix as mix
from ..audio import _rms as rms
from ..audio import _wav_info as wav_info

__all__ = [
    "TONE_AMPLITUDE",
    "AudioSource",
    "Silence",
    "Tone",
    "WavSource",
    "mix",
    "read_wav",
    "resample",
    "rms",
    "tone_level",
    "tone_pcm",
    "wav_header_for",
    "wav_info",
    "write_wav",
]


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


def tone_level(pcm: bytes, sample_rate: int, freq_hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``freq_hz`` component of ``pcm`` (Goertzel),
    unchecked; its keyword stays ``freq_hz``, as the deprecated public name had it."""
    return _goertzel(pcm, sample_rate, freq_hz)


def tone_pcm(
    freq_hz: float, sample_rate: int, seconds: float, amplitude: float = TONE_AMPLITUDE
) -> bytes:
    """``seconds`` of a sine tone at ``freq_hz`` as PCM16; the sample count is truncated, and
    nothing is checked (a tone above half the rate aliases, as a voice's may)."""
    return _sine(freq_hz, int(sample_rate * seconds), sample_rate, amplitude)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Linear-interpolation resampling; good enough for test voices, not for production audio."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {from_rate} -> {to_rate}")
    if from_rate == to_rate or not pcm:
        return pcm
    _np = _numpy_if_installed()
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
    return _from_samples(out)


def read_wav(data: bytes, sample_rate: int | None = None) -> tuple[bytes, int]:
    """PCM16 mono from a WAV file's bytes (stereo is averaged), optionally resampled.

    Returns ``(pcm, rate)``. Raises ``ValueError`` as :func:`wav_info` does. Resampling a long
    voice takes a while: the sandbox does it in a worker thread.
    """
    frames, rate = _decode_wav(data)
    if sample_rate is not None and sample_rate != rate:
        return resample(frames, rate, sample_rate), sample_rate
    return frames, rate


def wav_header_for(empty_wav: bytes, data_bytes: int) -> bytes:
    """The 44-byte header of ``empty_wav`` (a WAV with no frames, as :func:`write_wav` makes)
    rewritten for ``data_bytes`` of PCM: what to send before streaming that PCM."""
    header = bytearray(empty_wav[:44])
    header[4:8] = (36 + data_bytes).to_bytes(4, "little")
    header[40:44] = data_bytes.to_bytes(4, "little")
    return bytes(header)
