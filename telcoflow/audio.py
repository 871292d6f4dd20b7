"""Audio helpers for call audio: WAV files, tones, PCM16 checks, resampling and G.711.

This is the SDK's one audio API: the sandbox builds its voices and recordings on the same
arithmetic (its old ``telcoflow.sandbox.tone_pcm``, ``rms``, ... are deprecated aliases).

Call audio is raw PCM16 little-endian mono at 8000, 16000 or 24000 Hz in 20 ms frames. The
pure helpers here (WAV, tones, silence, checks, framing, levels) need only the standard library.
Resampling (:class:`Resampler`, :func:`resample`, via soxr) and the G.711 codecs (via numpy)
need the optional extra ``pip install "telcoflow-anyio[audio]"``; they import it when first used and
raise an :class:`ImportError` that says so if it is missing, so the core SDK stays light.
"""

from __future__ import annotations

import functools
import io
import math
import os
import sys
import wave
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

from ._core import FRAME_MS, SAMPLE_RATES

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "FRAME_MS",
    "SUPPORTED_RATES",
    "TONE_AMPLITUDE",
    "BytesLike",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "check_pcm16",
    "chunks",
    "duration",
    "frame_bytes",
    "mix",
    "read_wav",
    "resample",
    "rms",
    "silence",
    "tone",
    "tone_level",
    "ulaw_decode",
    "ulaw_encode",
    "write_wav",
]

#: What the helpers accept as audio: anything holding raw bytes.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Rates :class:`Resampler` converts between: the call rates of the protocol, plus 48 kHz, which
#: some speech models produce or expect.
SUPPORTED_RATES: frozenset[int] = SAMPLE_RATES | {48000}

#: Default tone level: a quarter of full scale, so that a few parties mixed never clip.
TONE_AMPLITUDE = 0.25

# Sample rates a WAV file may have: anything a real recording uses (8 kHz telephony to 192 kHz
# studio). Outside that it is a broken or hostile header (0 Hz divides by zero; 1 Hz makes a
# few bytes into hours of audio).
_MIN_WAV_RATE = 4000
_MAX_WAV_RATE = 192_000
# A WAV file is at most ten minutes long: the sandbox plays WAV voices, and converting one
# must not make more than ten minutes of audio at the call's rate (29 MB at 24 kHz).
_MAX_WAV_SECONDS = 600.0

#: soxr quality presets, fastest and lowest-latency first.
Quality: TypeAlias = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

_EXTRA_HINT = 'pip install "telcoflow-anyio[audio]"'


# -- checks -----------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def _n_samples(seconds: float, sample_rate: int) -> int:
    # round, not int: 0.29 s * 24000 Hz is 6959.999999999999 in floating point.
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"seconds must be zero or more, not {seconds!r}")
    return round(seconds * _positive_int("sample_rate", sample_rate))


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SUPPORTED_RATES:
        allowed = ", ".join(str(r) for r in sorted(SUPPORTED_RATES))
        raise ValueError(f"{name} must be one of {allowed} Hz, not {rate!r}")
    return rate


def _nbytes(pcm: object) -> int:
    if isinstance(pcm, (bytes, bytearray)):
        return len(pcm)
    if isinstance(pcm, memoryview):
        return pcm.nbytes
    raise TypeError(f"audio must be bytes, bytearray or memoryview, not {type(pcm).__name__}")


def check_pcm16(pcm: BytesLike, sample_rate: int | None = None) -> None:
    """Check that ``pcm`` can be PCM16 audio, and ``sample_rate`` (if given) a supported rate.

    Raises ``TypeError`` if ``pcm`` is not bytes-like (a ``str`` or a list, say) and
    ``ValueError`` if its length is odd (a PCM16 sample is two bytes) or the rate is not one of
    :data:`SUPPORTED_RATES`.
    """
    n = _nbytes(pcm)
    if n % 2:
        raise ValueError(
            f"PCM16 audio must have an even number of bytes (2 per sample), got {n}: "
            "a byte was lost or split between chunks, or the data is not PCM16"
        )
    if sample_rate is not None:
        _check_rate("sample_rate", sample_rate)


def frame_bytes(sample_rate: int, ms: int = FRAME_MS) -> int:
    """Bytes of PCM16 mono in ``ms`` milliseconds at ``sample_rate`` (960 for 20 ms at 24 kHz).

    ``ValueError`` if that is not a whole number of samples.
    """
    rate, ms = _positive_int("sample_rate", sample_rate), _positive_int("ms", ms)
    if rate * ms % 1000:
        raise ValueError(f"{ms} ms at {rate} Hz is not a whole number of samples")
    return rate * ms // 1000 * 2


def duration(pcm: BytesLike, sample_rate: int) -> float:
    """Length of PCM16 mono ``pcm`` in seconds."""
    check_pcm16(pcm)
    return _nbytes(pcm) // 2 / _positive_int("sample_rate", sample_rate)


def chunks(
    pcm: BytesLike, sample_rate: int, ms: int = FRAME_MS, *, pad: bool = False
) -> Iterator[bytes]:
    """``pcm`` cut into ``ms``-millisecond frames, ready to send one by one.

    The last frame is shorter if ``pcm`` does not divide evenly, or padded with silence to full
    length if ``pad`` is true. Arguments are checked at once, not on first iteration.
    """
    check_pcm16(pcm)
    size = frame_bytes(sample_rate, ms)
    view = memoryview(pcm).cast("B")

    def frames() -> Iterator[bytes]:
        for start in range(0, len(view), size):
            frame = bytes(view[start : start + size])
            if pad and len(frame) < size:
                frame += bytes(size - len(frame))
            yield frame

    return frames()


# -- PCM16 arithmetic (pure Python) --------------------------------------------------------------
#
# The kernels under the public helpers below. They check nothing (the public helpers check, then
# call them) and need no numpy. The sandbox builds its voices, mixes and recordings on them too
# (telcoflow.sandbox._pcm), so that each piece of arithmetic is written once.

_BIG_ENDIAN = sys.byteorder == "big"

_NUMPY: list[Any] = []


def _numpy_if_installed() -> Any:
    """numpy if it can be imported (it makes down-mixing and resampling long audio fast), else
    None: pure Python is the fallback. Imported on first use, never at import time."""
    if not _NUMPY:
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy is a test dependency
            _NUMPY.append(None)
        else:
            _NUMPY.append(numpy)
    return _NUMPY[0]


def _samples(pcm: bytes) -> array[int]:
    """PCM16 little-endian as native int16 samples."""
    a = array("h", pcm)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def _from_samples(samples: array[int]) -> bytes:
    """Native int16 samples as PCM16 little-endian."""
    if _BIG_ENDIAN:  # pragma: no cover
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _sine(hz: float, n: int, sample_rate: int, amplitude: float) -> bytes:
    """``n`` samples of a sine at ``hz`` starting at phase 0 (none if ``n`` is not positive)."""
    scale = amplitude * 32767
    step = 2 * math.pi * hz / sample_rate
    return _from_samples(array("h", (int(scale * math.sin(step * i)) for i in range(n))))


def _mix(*frames: bytes) -> bytes:
    """The sum of equal-length frames, clipped to int16; empty ones are skipped and a lone
    frame is returned as it is."""
    present = [f for f in frames if f]
    if not present:
        return b""
    if len(present) == 1:
        return present[0]
    total = [sum(group) for group in zip(*(_samples(f) for f in present), strict=True)]
    return _from_samples(
        array("h", (32767 if s > 32767 else -32768 if s < -32768 else s for s in total))
    )


def _rms(pcm: bytes) -> float:
    """Root-mean-square level, 0..1 of full scale (0 for no samples)."""
    samples = _samples(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


def _goertzel(pcm: bytes, sample_rate: int, hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``hz`` component, by the Goertzel algorithm: one
    bin of a DFT, in one pass and without numpy."""
    samples = _samples(pcm)
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * hz / sample_rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n / 32768


def _wav_info(data: bytes) -> tuple[int, int, float]:
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
    if not _MIN_WAV_RATE <= rate <= _MAX_WAV_RATE:
        raise ValueError(
            f"WAV sample rate {rate} Hz is not supported ({_MIN_WAV_RATE}..{_MAX_WAV_RATE} Hz)"
        )
    seconds = frames / rate
    if seconds > _MAX_WAV_SECONDS:
        raise ValueError(f"WAV is {seconds:.0f} s long; at most {_MAX_WAV_SECONDS:g} s")
    return channels, rate, seconds


def _decode_wav(data: bytes) -> tuple[bytes, int]:
    """PCM16 mono (stereo averaged) and the rate of a WAV file's content; ``ValueError`` as
    :func:`_wav_info` raises it."""
    channels, rate, _ = _wav_info(data)
    with wave.open(io.BytesIO(data), "rb") as w:
        frames = w.readframes(w.getnframes())
    frames = frames[: len(frames) & ~(2 * channels - 1)]  # whole frames only
    if channels == 2:
        np = _numpy_if_installed()
        if np is not None:
            both = np.frombuffer(frames, dtype="<i2").astype(np.int32).reshape(-1, 2)
            frames = bytes(both.sum(axis=1).__floordiv__(2).astype("<i2").tobytes())
        else:  # pragma: no cover - numpy is a test dependency
            s = _samples(frames)
            mono = array("h", ((s[i] + s[i + 1]) // 2 for i in range(0, len(s) - 1, 2)))
            frames = _from_samples(mono)
    return frames, rate


def _encode_wav(pcm: bytes, sample_rate: int) -> bytes:
    """A WAV file (PCM16 mono) holding ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


# -- generation, levels, mixing ------------------------------------------------------------------


def tone(hz: float, seconds: float, sample_rate: int, amplitude: float = TONE_AMPLITUDE) -> bytes:
    """``seconds`` of a sine tone at ``hz`` as PCM16 mono; ``amplitude`` is 0..1 of full scale."""
    n = _n_samples(seconds, sample_rate)
    if not 0 < hz < sample_rate / 2:
        raise ValueError(f"a {hz!r} Hz tone cannot be sampled at {sample_rate} Hz")
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude must be between 0 and 1, not {amplitude!r}")
    return _sine(hz, n, sample_rate, amplitude)


def silence(seconds: float, sample_rate: int) -> bytes:
    """``seconds`` of silence (zero samples) as PCM16 mono."""
    return bytes(2 * _n_samples(seconds, sample_rate))


def tone_level(pcm: BytesLike, sample_rate: int, hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``hz`` component of ``pcm``.

    A tone from :func:`tone` measures about its ``amplitude``; silence measures 0. Handy for
    asserting in tests that audio went through.
    """
    check_pcm16(pcm)
    return _goertzel(bytes(pcm), _positive_int("sample_rate", sample_rate), hz)


def rms(pcm: BytesLike) -> float:
    """Root-mean-square level of ``pcm`` (0..1 of full scale)."""
    check_pcm16(pcm)
    return _rms(bytes(pcm))


def mix(*frames: BytesLike) -> bytes:
    """Sum equal-length PCM16 frames, clipping at full scale; empty frames are skipped."""
    present = [bytes(f) for f in frames if _nbytes(f)]
    for f in present:
        check_pcm16(f)
    if len({len(f) for f in present}) > 1:
        raise ValueError(f"frames to mix must have equal lengths, got {[len(f) for f in present]}")
    return _mix(*present)


# -- WAV files --------------------------------------------------------------------------------


def read_wav(source: str | os.PathLike[str] | BytesLike) -> tuple[bytes, int]:
    """PCM16 mono and its sample rate from a WAV file: a path, or the file's content as bytes.

    Stereo is averaged to mono. ``ValueError`` for anything but 16-bit PCM, a rate outside
    4000..192000 Hz, or more than ten minutes of audio. The rate is the file's own: pass the
    audio through :func:`resample` to change it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = Path(source).read_bytes()
    return _decode_wav(data)


def write_wav(path: str | os.PathLike[str] | None, pcm: BytesLike, sample_rate: int) -> bytes:
    """A WAV file (PCM16 mono) holding ``pcm``; written to ``path`` unless that is ``None``.

    Returns the file's content either way.
    """
    check_pcm16(pcm)
    data = _encode_wav(bytes(pcm), _positive_int("sample_rate", sample_rate))
    if path is not None:
        Path(path).write_bytes(data)
    return data


# -- optional dependencies --------------------------------------------------------------------


@contextmanager
def _needs_extra(feature: str) -> Iterator[None]:
    """Turn a failed import of numpy or soxr into an error that says how to install them."""
    try:
        yield
    except ImportError as exc:
        raise ImportError(
            f"telcoflow.audio.{feature} needs {exc.name or 'numpy and soxr'}, which is not "
            f"installed; install the audio extra: {_EXTRA_HINT}",
            name=exc.name,
        ) from exc


# -- resampling (soxr) ------------------------------------------------------------------------


def _import_soxr(feature: str) -> Any:
    with _needs_extra(feature):
        import numpy  # noqa: F401  (soxr needs it: name numpy in the error if it is missing)
        import soxr  # type: ignore[import-untyped, unused-ignore]
    return soxr


class Resampler:
    """Streaming resampler between two of :data:`SUPPORTED_RATES`, for audio in chunks.

    :meth:`process` keeps the filter state between chunks, so resampling 20 ms frames one by
    one gives the same audio (up to dither) as resampling the whole at once; :meth:`flush`
    returns what is still held back at the end of the stream and readies a new stream.
    Output comes in bursts: soxr works in blocks, so some calls return nothing and the total
    lags the input by up to about 75 ms at ``"HQ"`` between 8 and 24 kHz (``"QQ"`` lags
    under 1 ms at lower quality). soxr dithers its int16 output (noise of about one LSB), so
    two runs over the same audio may differ in the last bit. Equal rates pass audio through
    unchanged. Needs the ``audio`` extra.
    """

    def __init__(self, from_rate: int, to_rate: int, *, quality: Quality = "HQ") -> None:
        self.from_rate = _check_rate("from_rate", from_rate)
        self.to_rate = _check_rate("to_rate", to_rate)
        self.quality = quality
        self._soxr = _import_soxr("Resampler")
        import numpy as np

        self._empty = np.zeros(0, dtype=np.int16)
        self._stream = None if from_rate == to_rate else self._open()

    def _open(self) -> Any:
        import numpy as np

        # dtype as the numpy type, not "int16": soxr 0.3.0 accepts only the type.
        return self._soxr.ResampleStream(self.from_rate, self.to_rate, 1, np.int16, self.quality)

    def __repr__(self) -> str:
        return f"<Resampler {self.from_rate} Hz -> {self.to_rate} Hz {self.quality}>"

    def process(self, pcm: BytesLike) -> bytes:
        """Resample the next chunk of the stream; may return less than a chunk's worth, or
        nothing, while soxr fills a block."""
        check_pcm16(pcm)
        if self._stream is None:
            return bytes(pcm)
        out = self._stream.resample_chunk(_int16(pcm))
        return _pcm16(out)

    def flush(self) -> bytes:
        """The rest of the stream's output; the resampler then starts afresh."""
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(self._empty, last=True)
        # A new stream rather than ResampleStream.clear(), which needs soxr 0.5.
        self._stream = self._open()
        return _pcm16(out)


def resample(pcm: BytesLike, from_rate: int, to_rate: int, *, quality: Quality = "HQ") -> bytes:
    """All of ``pcm`` resampled from ``from_rate`` to ``to_rate`` in one go (see
    :class:`Resampler` for streams). Needs the ``audio`` extra."""
    check_pcm16(pcm)
    _check_rate("from_rate", from_rate)
    _check_rate("to_rate", to_rate)
    soxr = _import_soxr("resample")  # even for equal rates, so that a missing extra shows early
    if from_rate == to_rate or not _nbytes(pcm):
        return bytes(pcm)
    return _pcm16(soxr.resample(_int16(pcm), from_rate, to_rate, quality=quality))


def _int16(pcm: BytesLike) -> NDArray[np.int16]:
    import numpy as np

    # soxr wants the native int16 dtype; on little-endian machines this is a zero-copy view.
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


def _pcm16(samples: NDArray[np.int16]) -> bytes:
    return samples.astype("<i2", copy=False).tobytes()


# -- G.711 (numpy) ----------------------------------------------------------------------------


class _G711Tables(NamedTuple):
    ulaw_encode: NDArray[np.uint8]  # 65536 entries, indexed by a sample's bits as uint16
    ulaw_decode: NDArray[np.int16]  # 256 entries, indexed by code
    alaw_encode: NDArray[np.uint8]
    alaw_decode: NDArray[np.int16]


#: Upper ends of the eight G.711 segments, µ-law on a 14-bit scale, A-law on a 13-bit scale.
_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_ULAW_BIAS = 0x84  # µ-law adds 132 (33 on the 14-bit scale) so segments start at powers of two
_ULAW_CLIP = 8159  # largest 14-bit magnitude µ-law encodes


@functools.cache
def _g711_tables() -> _G711Tables:
    """Lookup tables for ITU-T G.711 (the segment arithmetic of the reference g711.c), built
    once for every int16 sample and every code: encoding is then one indexing operation."""
    import numpy as np

    # Every int16 value, in the order of its bits read as uint16.
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    codes = np.arange(256, dtype=np.int32)

    u = x >> 2  # 14-bit
    mask = np.where(u < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(u), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEGMENT_ENDS, mag)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    ulaw_enc = (code ^ mask).astype(np.uint8)

    c = ~codes & 0xFF
    t = (((c & 0x0F) << 3) + _ULAW_BIAS) << ((c & 0x70) >> 4)
    ulaw_dec = np.where(c & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype("<i2")

    a = x >> 3  # 13-bit
    mask = np.where(a >= 0, 0xD5, 0x55)
    mag = np.where(a >= 0, a, -a - 1)
    seg = np.searchsorted(_ALAW_SEGMENT_ENDS, mag)
    quant = np.where(seg < 2, mag >> 1, mag >> seg) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    alaw_enc = (code ^ mask).astype(np.uint8)

    c = codes ^ 0x55
    t = (c & 0x0F) << 4
    seg = (c & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    alaw_dec = np.where(c & 0x80, t, -t).astype("<i2")

    return _G711Tables(ulaw_enc, ulaw_dec, alaw_enc, alaw_dec)


def _encode(feature: str, pcm: BytesLike, law: Literal["ulaw", "alaw"]) -> bytes:
    check_pcm16(pcm)
    with _needs_extra(feature):
        import numpy as np
    tables = _g711_tables()
    table = tables.ulaw_encode if law == "ulaw" else tables.alaw_encode
    codes: NDArray[np.uint8] = table[np.frombuffer(pcm, dtype="<u2")]
    return codes.tobytes()


def _decode(feature: str, data: BytesLike, law: Literal["ulaw", "alaw"]) -> bytes:
    _nbytes(data)
    with _needs_extra(feature):
        import numpy as np
    tables = _g711_tables()
    table = tables.ulaw_decode if law == "ulaw" else tables.alaw_decode
    samples: NDArray[np.int16] = table[np.frombuffer(data, dtype=np.uint8)]
    return samples.tobytes()


def ulaw_encode(pcm16: BytesLike) -> bytes:
    """G.711 µ-law (PCMU) codes, one byte per PCM16 sample. Needs the ``audio`` extra."""
    return _encode("ulaw_encode", pcm16, "ulaw")


def ulaw_decode(data: BytesLike) -> bytes:
    """PCM16 from G.711 µ-law (PCMU) codes. Needs the ``audio`` extra."""
    return _decode("ulaw_decode", data, "ulaw")


def alaw_encode(pcm16: BytesLike) -> bytes:
    """G.711 A-law (PCMA) codes, one byte per PCM16 sample. Needs the ``audio`` extra."""
    return _encode("alaw_encode", pcm16, "alaw")


def alaw_decode(data: BytesLike) -> bytes:
    """PCM16 from G.711 A-law (PCMA) codes. Needs the ``audio`` extra."""
    return _decode("alaw_decode", data, "alaw")
