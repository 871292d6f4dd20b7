"""telcoflow.audio: WAV, tones, PCM16 checks, soxr resampling, G.711, and the optional extra."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from telcoflow import audio

RATES = (8000, 16000, 24000, 48000)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def pcm16(values: object) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def wav_bytes(frames: bytes, *, channels: int = 1, width: int = 2, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


# -- WAV ---------------------------------------------------------------------------------------


def test_wav_round_trip_in_memory() -> None:
    pcm = audio.tone(440, 0.1, 16000)
    data = audio.write_wav(None, pcm, 16000)
    assert data[:4] == b"RIFF"
    assert audio.read_wav(data) == (pcm, 16000)
    assert audio.read_wav(bytearray(data)) == (pcm, 16000)
    assert audio.read_wav(memoryview(data)) == (pcm, 16000)


def test_wav_round_trip_through_files(tmp_path: Path) -> None:
    pcm = audio.tone(1000, 0.2, 8000)
    path = tmp_path / "tone.wav"
    data = audio.write_wav(path, pcm, 8000)
    assert path.read_bytes() == data
    assert audio.read_wav(path) == (pcm, 8000)
    assert audio.read_wav(str(path)) == (pcm, 8000)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)


def test_stereo_wav_is_averaged_to_mono() -> None:
    left, right = [1000, -3000, 32767, 0], [3000, -1000, 32767, -2]
    frames = pcm16([s for pair in zip(left, right, strict=True) for s in pair])
    pcm, rate = audio.read_wav(wav_bytes(frames, channels=2, rate=24000))
    assert rate == 24000
    assert samples(pcm).tolist() == [2000, -2000, 32767, -1]


def test_non_16_bit_wav_is_rejected() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        audio.read_wav(wav_bytes(bytes(100), width=1))


def test_not_a_wav_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WAV"):
        audio.read_wav(b"RIFF nonsense")
    with pytest.raises(FileNotFoundError):
        audio.read_wav(tmp_path / "missing.wav")


def test_write_wav_checks_its_audio() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        audio.write_wav(None, b"\x00\x01\x02", 8000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.write_wav(None, b"", 0)


# -- tones and silence ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_tone_has_its_frequency_and_length(rate: int) -> None:
    pcm = audio.tone(440, 0.5, rate)
    assert len(pcm) == 2 * rate // 2
    assert audio.tone_level(pcm, rate, 440) == pytest.approx(audio.TONE_AMPLITUDE, abs=0.01)
    assert audio.tone_level(pcm, rate, 1000) < 0.005
    loud = audio.tone(1000, 0.5, rate, amplitude=0.9)
    assert audio.tone_level(loud, rate, 1000) == pytest.approx(0.9, abs=0.01)


def test_durations_are_rounded_not_truncated() -> None:
    # 0.29 * 24000 is 6959.999999999999 in floating point (0.29 * 8000 is exactly 2320.0).
    assert 0.29 * 24000 < 6960
    assert len(audio.tone(440, 0.29, 24000)) == 2 * 6960
    assert len(audio.silence(0.29, 24000)) == 2 * 6960
    assert audio.tone(440, 0, 8000) == b""


def test_silence_is_zeros() -> None:
    pcm = audio.silence(0.02, 24000)
    assert pcm == bytes(960)
    assert audio.rms(pcm) == 0.0


@pytest.mark.parametrize(
    ("hz", "seconds", "rate", "amplitude", "match"),
    [
        (4000, 1, 8000, 0.25, "cannot be sampled"),
        (0, 1, 8000, 0.25, "cannot be sampled"),
        (440, -1, 8000, 0.25, "seconds"),
        (440, float("nan"), 8000, 0.25, "seconds"),
        (440, 1, 8000, 1.5, "amplitude"),
        (440, 1, 0, 0.25, "sample_rate"),
    ],
)
def test_tone_rejects_bad_arguments(
    hz: float, seconds: float, rate: int, amplitude: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        audio.tone(hz, seconds, rate, amplitude)


# -- PCM16 checks and framing -----------------------------------------------------------------


def test_check_pcm16_accepts_bytes_likes() -> None:
    for pcm in (b"", bytes(960), bytearray(4), memoryview(bytes(8))):
        audio.check_pcm16(pcm)
        audio.check_pcm16(pcm, 24000)


@pytest.mark.parametrize("bad", ["\x00\x00", [0, 0], 0, None])
def test_check_pcm16_rejects_non_bytes(bad: object) -> None:
    with pytest.raises(TypeError, match="bytes, bytearray or memoryview"):
        audio.check_pcm16(bad)  # type: ignore[arg-type]


def test_check_pcm16_rejects_odd_lengths_and_unsupported_rates() -> None:
    with pytest.raises(ValueError, match=r"even number of bytes \(2 per sample\), got 961"):
        audio.check_pcm16(bytes(961))
    with pytest.raises(ValueError, match="44100"):
        audio.check_pcm16(bytes(2), 44100)
    with pytest.raises(ValueError, match="True"):
        audio.check_pcm16(bytes(2), True)


def test_frame_bytes_and_duration() -> None:
    assert [audio.frame_bytes(r) for r in RATES] == [320, 640, 960, 1920]
    assert audio.frame_bytes(8000, 10) == 160
    assert audio.duration(bytes(960), 24000) == 0.02
    assert audio.duration(audio.tone(440, 1.5, 16000), 16000) == 1.5
    with pytest.raises(ValueError, match="whole number of samples"):
        audio.frame_bytes(11025, 20)
    with pytest.raises(ValueError, match="ms"):
        audio.frame_bytes(8000, 0)
    with pytest.raises(ValueError, match="even number"):
        audio.duration(bytes(3), 8000)


def test_chunks_cut_frames() -> None:
    pcm = bytes(range(200)) * 5  # 1000 bytes: three 320-byte frames at 8 kHz and 40 bytes over
    frames = list(audio.chunks(pcm, 8000))
    assert [len(f) for f in frames] == [320, 320, 320, 40]
    assert b"".join(frames) == pcm
    padded = list(audio.chunks(bytearray(pcm), 8000, pad=True))
    assert [len(f) for f in padded] == [320] * 4
    assert padded[-1] == pcm[960:] + bytes(280)
    assert [len(f) for f in audio.chunks(bytes(960), 24000, ms=10)] == [480, 480]
    assert list(audio.chunks(b"", 8000)) == []


def test_chunks_checks_arguments_at_once() -> None:
    with pytest.raises(ValueError, match="even number"):
        audio.chunks(bytes(3), 8000)
    with pytest.raises(TypeError):
        audio.chunks("pcm", 8000)  # type: ignore[arg-type]


def test_mix_and_rms() -> None:
    a, b = pcm16([1000, 30000, -30000]), pcm16([1000, 30000, -30000])
    assert samples(audio.mix(a, b, b"")).tolist() == [2000, 32767, -32768]
    assert audio.mix() == b""
    with pytest.raises(ValueError, match="equal lengths"):
        audio.mix(bytes(4), bytes(6))
    assert audio.rms(pcm16([16384, -16384])) == 0.5


# -- resampling -------------------------------------------------------------------------------


def resample_in_frames(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    r = audio.Resampler(from_rate, to_rate)
    return b"".join(r.process(f) for f in audio.chunks(pcm, from_rate)) + r.flush()


def test_round_trip_24k_16k_24k_keeps_the_tone() -> None:
    pcm = audio.tone(440, 1.0, 24000)
    down = resample_in_frames(pcm, 24000, 16000)
    assert abs(len(down) // 2 - 16000) <= 2
    assert audio.tone_level(down, 16000, 440) == pytest.approx(audio.TONE_AMPLITUDE, abs=0.005)
    back = resample_in_frames(down, 16000, 24000)
    assert abs(len(back) // 2 - 24000) <= 3
    assert audio.tone_level(back, 24000, 440) == pytest.approx(audio.TONE_AMPLITUDE, abs=0.005)
    assert audio.tone_level(back, 24000, 1000) < 0.001
    # Delay-compensated: the samples line up with the input, away from the filter's edges.
    n = min(len(pcm), len(back)) // 2
    edge = 240  # 10 ms
    diff = samples(back)[edge : n - edge] - samples(pcm)[edge : n - edge]
    assert np.abs(diff).max() <= 16


@pytest.mark.parametrize(
    ("from_rate", "to_rate"),
    [(24000, 16000), (16000, 24000), (8000, 24000), (24000, 8000), (48000, 24000), (16000, 48000)],
)
def test_frame_by_frame_matches_all_at_once(from_rate: int, to_rate: int) -> None:
    pcm = audio.tone(440, 0.5, from_rate) + audio.tone(1200, 0.5, from_rate)
    framed = samples(resample_in_frames(pcm, from_rate, to_rate))
    whole_r = audio.Resampler(from_rate, to_rate)
    whole = samples(whole_r.process(pcm) + whole_r.flush())
    one_shot = samples(audio.resample(pcm, from_rate, to_rate))
    assert len(framed) == len(whole) == len(one_shot)
    assert abs(len(framed) - len(pcm) // 2 * to_rate // from_rate) <= 1
    assert np.allclose(framed, whole, atol=4, rtol=0)
    assert np.allclose(framed, one_shot, atol=4, rtol=0)


def test_resampler_is_reusable_after_flush() -> None:
    pcm = audio.tone(440, 0.2, 24000)
    r = audio.Resampler(24000, 8000)
    first = b"".join(r.process(f) for f in audio.chunks(pcm, 24000)) + r.flush()
    second = b"".join(r.process(f) for f in audio.chunks(pcm, 24000)) + r.flush()
    # Same up to soxr's dither: its int16 output adds TPDF noise of an LSB or two.
    assert len(first) == len(second)
    assert np.allclose(samples(first), samples(second), atol=4, rtol=0)
    assert r.flush() == b""


def test_equal_rates_pass_through() -> None:
    pcm = audio.tone(440, 0.1, 16000)
    r = audio.Resampler(16000, 16000)
    assert r.process(pcm) == pcm
    assert r.process(memoryview(pcm)) == pcm
    assert r.flush() == b""
    assert audio.resample(pcm, 16000, 16000) == pcm
    assert audio.resample(b"", 8000, 16000) == b""


@pytest.mark.parametrize("rate", [44100, 22050, 0, -8000, True, 16000.0])
def test_unsupported_rates_are_named(rate: object) -> None:
    with pytest.raises(ValueError, match=f"from_rate must be one of .*not {rate!r}"):
        audio.Resampler(rate, 16000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"to_rate must be one of .*not {rate!r}"):
        audio.resample(bytes(4), 16000, rate)  # type: ignore[arg-type]


def test_resampler_rejects_bad_chunks() -> None:
    r = audio.Resampler(24000, 16000)
    with pytest.raises(ValueError, match="even number of bytes"):
        r.process(bytes(961))
    with pytest.raises(TypeError):
        r.process("pcm")  # type: ignore[arg-type]
    assert "24000 Hz -> 16000 Hz" in repr(r)


# -- G.711 ------------------------------------------------------------------------------------

ALL_CODES = bytes(range(256))
FULL_RAMP = np.arange(-32768, 32768, dtype=np.int64)


def test_g711_known_vectors() -> None:
    assert audio.ulaw_encode(pcm16([0])) == b"\xff"
    assert audio.alaw_encode(pcm16([0])) == b"\xd5"
    assert audio.ulaw_encode(pcm16([32767, -32768])) == b"\x80\x00"
    assert audio.alaw_encode(pcm16([32767, -32768])) == b"\xaa\x2a"
    assert samples(audio.ulaw_decode(b"\xff\x7f\x80\x00")).tolist() == [0, 0, 32124, -32124]
    assert samples(audio.alaw_decode(b"\xd5\x55\xaa\x2a")).tolist() == [8, -8, 32256, -32256]


def test_g711_lengths_and_checks() -> None:
    pcm = audio.tone(440, 0.02, 8000)
    for encode, decode in (
        (audio.ulaw_encode, audio.ulaw_decode),
        (audio.alaw_encode, audio.alaw_decode),
    ):
        assert len(encode(pcm)) == 160
        assert len(decode(encode(pcm))) == 320
        assert encode(b"") == decode(b"") == b""
        assert encode(bytearray(pcm)) == encode(memoryview(pcm)) == encode(pcm)
        with pytest.raises(ValueError, match="even number of bytes"):
            encode(bytes(3))
        with pytest.raises(TypeError):
            decode("codes")  # type: ignore[arg-type]


def test_ulaw_quantisation_error_is_bounded_over_the_full_range() -> None:
    back = samples(audio.ulaw_decode(audio.ulaw_encode(pcm16(FULL_RAMP))))
    err, mag = np.abs(back - FULL_RAMP), np.abs(FULL_RAMP)
    inside = mag <= 32124
    # Half a quantisation step (which grows with the segment), plus the 14-bit truncation.
    assert np.all(err[inside] <= (mag[inside] + 132) / 32 + 4)
    assert np.all(err[~inside] == mag[~inside] - 32124)  # clipped to the largest code
    assert np.all(np.diff(back) >= 0)  # monotonic


def test_alaw_quantisation_error_is_bounded_over_the_full_range() -> None:
    back = samples(audio.alaw_decode(audio.alaw_encode(pcm16(FULL_RAMP))))
    err, mag = np.abs(back - FULL_RAMP), np.abs(FULL_RAMP)
    inside = mag <= 32256
    assert np.all(err[inside] <= np.maximum(8, mag[inside] / 32))
    assert np.all(err[~inside] == mag[~inside] - 32256)
    assert np.all(np.diff(back) >= 0)


def test_encoding_a_decoded_code_gives_the_code_back() -> None:
    assert audio.alaw_encode(audio.alaw_decode(ALL_CODES)) == ALL_CODES
    # µ-law has two zeros: 0x7F ("-0") decodes to 0, which encodes as 0xFF ("+0").
    expected = ALL_CODES.replace(b"\x7f", b"\xff")
    assert audio.ulaw_encode(audio.ulaw_decode(ALL_CODES)) == expected


def test_g711_matches_cpython_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="audioop was removed in Python 3.13")
    ramp = pcm16(FULL_RAMP)
    assert audio.ulaw_encode(ramp) == audioop.lin2ulaw(ramp, 2)
    assert audio.alaw_encode(ramp) == audioop.lin2alaw(ramp, 2)
    assert audio.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert audio.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


# -- the optional extra -----------------------------------------------------------------------

HINT = 'pip install "telcoflow-anyio[audio]"'


def test_missing_numpy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    for call in (
        lambda: audio.ulaw_encode(bytes(2)),
        lambda: audio.alaw_decode(b"\xd5"),
        lambda: audio.Resampler(24000, 16000),
    ):
        with pytest.raises(ImportError, match="needs numpy") as info:
            call()
        assert HINT in str(info.value)
        assert info.value.name == "numpy"


def test_missing_soxr_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(ImportError, match=r"Resampler needs soxr.*telcoflow-anyio\[audio\]"):
        audio.Resampler(24000, 16000)
    with pytest.raises(ImportError, match=r"resample needs soxr.*telcoflow-anyio\[audio\]"):
        audio.resample(bytes(4), 24000, 24000)
    assert audio.ulaw_encode(bytes(2)) == b"\xff"  # G.711 needs numpy only


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter (warnings are errors) that imports this tree."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_pure_helpers_work_without_numpy_or_soxr() -> None:
    script = textwrap.dedent(
        """
        import sys
        import telcoflow.audio as audio
        assert "numpy" not in sys.modules and "soxr" not in sys.modules, "imported eagerly"
        sys.modules["numpy"] = sys.modules["soxr"] = None
        pcm = audio.tone(440, 0.1, 8000) + audio.silence(0.1, 8000)
        audio.check_pcm16(pcm, 8000)
        assert audio.read_wav(audio.write_wav(None, pcm, 8000)) == (pcm, 8000)
        assert len(list(audio.chunks(pcm, 8000))) == 10
        # Levels, mixing and the stereo down-mix have pure-Python paths too.
        import io, struct, wave
        assert abs(audio.tone_level(pcm[:1600], 8000, 440) - audio.TONE_AMPLITUDE) < 0.01
        assert audio.rms(pcm[1600:]) == 0.0
        mixed = audio.mix(struct.pack("<3h", 100, -200, 30000), struct.pack("<3h", 1, 2, 30000))
        assert mixed == struct.pack("<3h", 101, -198, 32767)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(struct.pack("<4h", 1000, 3000, -3001, -1000))
        assert audio.read_wav(buf.getvalue()) == (struct.pack("<2h", 2000, -2001), 8000)
        try:
            audio.ulaw_encode(pcm)
        except ImportError as exc:
            print(exc)
        else:
            raise AssertionError("ulaw_encode worked without numpy")
        """
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert "ulaw_encode needs numpy" in done.stdout
    assert HINT in done.stdout


def test_importing_audio_does_not_load_the_sandbox() -> None:
    # The sandbox builds on telcoflow.audio, never the other way: an agent that only wants the
    # helpers must not load the server (and its TLS and HTTP machinery) with them.
    done = run_python(
        "import sys, telcoflow.audio\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('telcoflow.sandbox'))\n"
        "assert not loaded, loaded\n"
    )
    assert done.returncode == 0, done.stderr
