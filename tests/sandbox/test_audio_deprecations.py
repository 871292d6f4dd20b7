"""The sandbox's old audio names: deprecated for telcoflow.audio, and still what they were.

``telcoflow.sandbox.tone_pcm`` and friends were public helpers that differed from
``telcoflow.audio``'s functions of the same purpose (code review 1.2). Each now warns, naming its
replacement, and returns exactly what it returned before the move: the digests below were taken
from the helpers as they were in ``telcoflow/_pcm.py`` before it moved into the sandbox.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import telcoflow.sandbox
from telcoflow import audio
from telcoflow.sandbox import Voice

#: Each deprecated name and the telcoflow.audio function its warning must name.
REPLACEMENTS = {
    "tone_pcm": "telcoflow.audio.tone(",
    "mix": "telcoflow.audio.mix(",
    "rms": "telcoflow.audio.rms(",
    "tone_level": "telcoflow.audio.tone_level(",
    "read_wav": "telcoflow.audio.read_wav(",
    "write_wav": "telcoflow.audio.write_wav(",
    "resample": "telcoflow.audio.resample(",
}


def deprecated(name: str) -> Callable[..., Any]:
    """``telcoflow.sandbox.<name>``, taken under ``pytest.deprecated_call``."""
    with pytest.deprecated_call():
        helper: Callable[..., Any] = getattr(telcoflow.sandbox, name)
    return helper


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the deprecation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REPLACEMENTS))
def test_each_old_name_warns_and_names_its_replacement(name: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(telcoflow.sandbox, name)
    [warning] = caught
    assert warning.category is DeprecationWarning
    message = str(warning.message)
    assert message.startswith(f"telcoflow.sandbox.{name} is deprecated; use ")
    assert REPLACEMENTS[name] in message
    assert warning.filename == __file__, "the warning points at the caller, not the sandbox"


@pytest.mark.parametrize("name", sorted(REPLACEMENTS))
def test_importing_an_old_name_warns_too(name: str) -> None:
    namespace: dict[str, Any] = {}
    with pytest.warns(DeprecationWarning, match=rf"telcoflow\.sandbox\.{name} is deprecated"):
        exec(f"from telcoflow.sandbox import {name}", namespace)
    assert namespace[name] is getattr(telcoflow.sandbox._pcm, name)


def test_the_warnings_say_how_the_calls_differ() -> None:
    def message(name: str) -> str:
        with pytest.warns(DeprecationWarning, match=f"{name} is deprecated") as record:
            getattr(telcoflow.sandbox, name)
        return str(record[0].message)

    assert "seconds come before the rate" in message("tone_pcm")
    assert "rounded rather than truncated" in message("tone_pcm")
    assert "a path comes first (None" in message("write_wav")
    assert "Voice.from_wav(data).convert(rate)" in message("read_wav")
    assert "not linear interpolation" in message("resample")
    assert "telcoflow-anyio[audio]" in message("resample")


def test_the_old_names_left_the_public_api() -> None:
    assert not set(REPLACEMENTS) & set(telcoflow.sandbox.__all__)
    namespace: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from telcoflow.sandbox import *", namespace)
    assert not set(REPLACEMENTS) & set(namespace)


def test_other_missing_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'tone'"):
        telcoflow.sandbox.tone  # noqa: B018
    assert not hasattr(telcoflow.sandbox, "no_such_helper")


# -- the same results as before ------------------------------------------------------------------

#: 0.29 s at 24 kHz: 6959.999999999999 samples, which tone_pcm truncated and audio.tone rounds.
TONE = 440, 24000, 0.29
TONE_SHA256 = "186d0f57ac620b90a0e2573533ad054874fb406418710fd359c51baae453a6db"


def old_tone() -> bytes:
    pcm: bytes = deprecated("tone_pcm")(*TONE)
    return pcm


#: Each old name's parameters as they were (keyword callers depend on the names).
SIGNATURES = {
    "tone_pcm": "(freq_hz, sample_rate, seconds, amplitude=0.25)",
    "mix": "(*frames)",
    "rms": "(pcm)",
    "tone_level": "(pcm, sample_rate, freq_hz)",
    "read_wav": "(data, sample_rate=None)",
    "write_wav": "(pcm, sample_rate)",
    "resample": "(pcm, from_rate, to_rate)",
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_old_names_keep_their_parameters(name: str) -> None:
    params = inspect.signature(deprecated(name)).parameters.values()
    shown = ", ".join(
        ("*" if p.kind is p.VAR_POSITIONAL else "")
        + p.name
        + ("" if p.default is p.empty else f"={p.default!r}")
        for p in params
    )
    assert f"({shown})" == SIGNATURES[name]


def test_tone_level_by_keyword_as_before() -> None:
    pcm = old_tone()
    assert deprecated("tone_level")(pcm, sample_rate=24000, freq_hz=440) == 0.24983046977585452


def test_tone_pcm_is_unchanged() -> None:
    tone_pcm = deprecated("tone_pcm")
    pcm = tone_pcm(*TONE)
    assert len(pcm) == 2 * 6959
    assert sha256(pcm) == TONE_SHA256
    assert sha256(tone_pcm(1000, 24000, 0.5, 0.5)) == (
        "c7b60c73e2cfcd6dcb37f4f7c7e37be878616f39aaf8bc5a52dbdd766114148a"
    )
    # Nothing is checked: a tone above half the rate aliases; negative seconds give nothing.
    assert tone_pcm(5000, 8000, 0.001).hex() == "000060e9ff1f60e90000a01601e0a016"
    assert tone_pcm(440, 8000, -1) == b""
    # The replacement gives the same samples for the same count; its count is rounded.
    assert audio.tone(440, 6959 / 24000, 24000) == pcm
    assert len(audio.tone(440, 0.29, 24000)) == 2 * 6960


def test_mix_is_unchanged() -> None:
    mix, pcm = deprecated("mix"), old_tone()
    louder = audio.tone(1000, 0.5, 24000, 0.5)[: len(pcm)]
    assert sha256(mix(pcm, louder, b"")) == (
        "dc6079449d7ef5115bc199eccf8c1c7fa80993054337268ce1aa7492b4655eae"
    )
    assert mix(pcm, louder, b"") == audio.mix(pcm, louder, b"")
    assert mix(b"\x10\x00", b"\xff\x7f") == b"\xff\x7f"  # clipped at full scale
    assert mix() == mix(b"", b"") == b""
    lone = bytearray(4)
    assert mix(lone) is lone  # a lone frame comes back as it is; audio.mix returns bytes
    with pytest.raises(ValueError, match="argument 2 is longer"):  # zip(strict=True)'s
        mix(bytes(4), bytes(6))


def test_rms_and_tone_level_are_unchanged() -> None:
    rms, tone_level, pcm = deprecated("rms"), deprecated("tone_level"), old_tone()
    assert rms(pcm) == 0.17670681125280788 == audio.rms(pcm)
    assert rms(b"") == 0.0
    level = tone_level(pcm, 24000, 440)
    assert level == 0.24983046977585452 == audio.tone_level(pcm, 24000, 440)
    assert tone_level(b"", 24000, 440) == 0.0


def test_wav_helpers_are_unchanged() -> None:
    read_wav, write_wav, pcm = deprecated("read_wav"), deprecated("write_wav"), old_tone()
    wav = write_wav(pcm, 24000)
    assert sha256(wav) == "8e0800cec1f47f8321068225bf7ed8b0c45015daa1a7ff9056b09853f3277670"
    assert wav == audio.write_wav(None, pcm, 24000)
    assert read_wav(wav) == (pcm, 24000) == audio.read_wav(wav)
    converted, rate = read_wav(wav, 16000)  # linear interpolation, as the sandbox plays it
    assert rate == 16000
    assert len(converted) == 2 * 4639
    digest = "723af30ec973d4f690d1af548ff3e695a4bd561dfc41f7b6fea8c694ce895a86"
    assert sha256(converted) == digest
    assert converted == Voice.from_wav(wav).convert(16000)  # the replacement the warning names
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(wav[:34] + b"\x08" + wav[35:])  # bits per sample: 8


def test_resample_is_unchanged() -> None:
    resample, pcm = deprecated("resample"), old_tone()
    out = resample(pcm, 24000, 11025)  # any positive rates, no audio extra
    assert len(out) == 2 * 3196
    assert sha256(out) == "ea1a5ef9b7791c0efbd4b53ac3ba7fbe62897a022b03ceb6bc3da9e39ea28e05"
    assert resample(bytes.fromhex("0000e803"), 8000, 16000).hex() == "0000f401e803e803"
    assert resample(pcm, 24000, 24000) is pcm
    with pytest.raises(ValueError, match="positive"):
        resample(pcm, 0, 8000)
