"""A local Telcoflow server with simulated callers and callees, for offline development and tests.

``async with Sandbox() as sb:`` (asyncio or trio) serves the hosted service's control
(session-manager), media and REST planes (PROTOCOL.md) and the HTTP API of SANDBOX.md on one
port; ``telcoflow sandbox serve`` runs it from the command line.

Audio helpers (tones, levels, WAV files, resampling) are :mod:`telcoflow.audio`'s. The names
this package used to export for them (``tone_pcm``, ``mix``, ``rms``, ``tone_level``,
``read_wav``, ``write_wav``, ``resample``) still work, with a ``DeprecationWarning`` that names
the replacement and how its call differs.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from . import _pcm
from ._call import CallStats, SimCall
from ._frontdoor import Limits, Upgrade
from ._server import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, Connector, Sandbox
from ._spec import CalleeSpec, CallSpec, NumberSpec, Voice
from ._switchboard import Retention, SimSession, SmConnection

if TYPE_CHECKING:
    # Typed for code that still uses them; at run time __getattr__ hands them out, warning.
    from ._pcm import mix as mix
    from ._pcm import read_wav as read_wav
    from ._pcm import resample as resample
    from ._pcm import rms as rms
    from ._pcm import tone_level as tone_level
    from ._pcm import tone_pcm as tone_pcm
    from ._pcm import write_wav as write_wav

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_CONNECTOR_UUID",
    "CallSpec",
    "CallStats",
    "CalleeSpec",
    "Connector",
    "Limits",
    "NumberSpec",
    "Retention",
    "Sandbox",
    "SimCall",
    "SimSession",
    "SmConnection",
    "Upgrade",
    "Voice",
]

#: The deprecated audio names: what replaces each, and how the call differs. Each still works
#: exactly as before (it is the sandbox's own function, which its voices use).
_DEPRECATED = {
    "tone_pcm": (
        "telcoflow.audio.tone(hz, seconds, sample_rate, amplitude): seconds come before the rate, "
        "the sample count is rounded rather than truncated (a sample more for some durations), "
        "and a frequency not below half the rate, an amplitude outside 0..1 or negative seconds "
        "raise ValueError"
    ),
    "mix": (
        "telcoflow.audio.mix(*frames): the same sum; it also takes bytearray and memoryview, "
        "always returns bytes, and its ValueError names an odd-length or unequal frame"
    ),
    "rms": (
        "telcoflow.audio.rms(pcm): the same level (0..1 of full scale); it also checks that pcm "
        "is PCM16 (bytes-like, an even number of bytes)"
    ),
    "tone_level": (
        "telcoflow.audio.tone_level(pcm, sample_rate, hz): the same arguments and level; it also "
        "checks pcm and that sample_rate is a positive integer"
    ),
    "read_wav": (
        "telcoflow.audio.read_wav(source): it takes a path or the file's bytes, and has no "
        "sample_rate (it returns the file's own rate): convert with telcoflow.audio.resample, or "
        "take Voice.from_wav(data).convert(rate) for exactly the PCM the sandbox plays"
    ),
    "write_wav": (
        "telcoflow.audio.write_wav(path, pcm, sample_rate): a path comes first (None to only get "
        "the file's bytes), and pcm and the rate are checked"
    ),
    "resample": (
        "telcoflow.audio.resample(pcm, from_rate, to_rate): soxr's band-limited resampling, not "
        "linear interpolation, so the samples differ (and the length by up to one); it needs the "
        'audio extra (pip install "telcoflow-anyio[audio]") and rates in '
        "telcoflow.audio.SUPPORTED_RATES"
    ),
}


def __getattr__(name: str) -> object:
    """The deprecated audio names, with a ``DeprecationWarning`` (PEP 562)."""
    replacement = _DEPRECATED.get(name)
    if replacement is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"telcoflow.sandbox.{name} is deprecated; use {replacement}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_pcm, name)
