"""Helpers for testing voice agents against the sandbox: take offered calls one by one, and
assert what a simulated party heard and which commands the agent sent.

Used by the pytest plugin (:mod:`telcoflow.pytest_plugin`) and usable on their own. For bridge
tests, :mod:`telcoflow.testing.openai_realtime` and :mod:`telcoflow.testing.gemini_live` are
stand-in model servers; :class:`Answer` is one line of their (and ``ScriptedModel``'s) script.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import anyio

from .. import events
from ..audio import rms, tone_level
from ..call import ActiveCall
from ..client import TelcoflowClient
from ..sandbox import SimCall, Voice
from ._engine import Answer

__all__ = [
    "Answer",
    "CallInbox",
    "assert_commands",
    "assert_heard_tone",
    "assert_heard_wav",
    "assert_silent",
    "heard",
    "tone_seconds",
]

#: A tone counts as present in a window when its amplitude is at least this (0..1 of full
#: scale; the sandbox's tones play at 0.25, an echo of them arrives near that).
TONE_THRESHOLD = 0.02
#: Windows of 100 ms: short enough to time a tone, long enough to measure its frequency.
WINDOW_S = 0.1
#: Below this RMS (0..1 of full scale) audio counts as silence.
SILENCE_RMS = 0.003


class CallInbox:
    """The calls a client is offered, in order: ``call = await inbox.next()``.

    Registers an ``INCOMING_CALL`` handler on ``client``; close it (or use ``with``) when done.
    """

    def __init__(self, client: TelcoflowClient, capacity: int = 1000) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[ActiveCall](capacity)
        client.on(events.INCOMING_CALL, self._offered)

    def _offered(self, call: ActiveCall) -> None:
        try:
            self._send.send_nowait(call)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def next(self, timeout: float = 10.0) -> ActiveCall:
        """The next offered call; ``TimeoutError`` if none comes within ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            return await self._receive.receive()

    def next_nowait(self) -> ActiveCall:
        """The next offered call if one is waiting; ``anyio.WouldBlock`` if none (to assert
        that nothing else was offered)."""
        return self._receive.receive_nowait()

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    def __enter__(self) -> CallInbox:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def heard(call: SimCall, party: str, start_s: float = 0.0, end_s: float | None = None) -> bytes:
    """What ``party`` heard on ``call`` between two points of the call's timeline (seconds)."""
    pcm = call.recording(party)
    rate = call.sample_rate or 24000
    a = int(start_s * rate) * 2
    b = len(pcm) if end_s is None else int(end_s * rate) * 2
    return pcm[a:b]


def tone_seconds(
    pcm: bytes, sample_rate: int, hz: float, threshold: float = TONE_THRESHOLD
) -> float:
    """How many seconds of ``pcm`` carry a tone at ``hz`` (counted in 100 ms windows)."""
    window = int(sample_rate * WINDOW_S) * 2
    present = sum(
        1
        for i in range(0, len(pcm) - window + 1, window)
        if tone_level(pcm[i : i + window], sample_rate, hz) >= threshold
    )
    return present * WINDOW_S


def _pcm_and_rate(
    source: SimCall | bytes, party: str | None, sample_rate: int | None
) -> tuple[bytes, int]:
    if isinstance(source, SimCall):
        if party is None:
            raise ValueError("say which party: caller, callee or agent")
        return source.recording(party), source.sample_rate or 24000
    if sample_rate is None:
        raise ValueError("sample_rate is needed for raw PCM")
    return source, sample_rate


def assert_heard_tone(
    source: SimCall | bytes,
    hz: float,
    *,
    party: str | None = None,
    at_least_s: float = 0.2,
    sample_rate: int | None = None,
) -> float:
    """Assert that a party (or raw PCM) heard a tone at ``hz`` for at least ``at_least_s``;
    returns the seconds heard."""
    pcm, rate = _pcm_and_rate(source, party, sample_rate)
    seconds = tone_seconds(pcm, rate, hz)
    who = party or "the audio"
    assert seconds >= at_least_s, (
        f"{who} heard {hz:g} Hz for {seconds:.1f} s, expected at least {at_least_s:g} s"
    )
    return seconds


def assert_silent(
    source: SimCall | bytes, *, party: str | None = None, sample_rate: int | None = None
) -> None:
    """Assert that a party (or raw PCM) heard nothing but silence."""
    pcm = source if isinstance(source, bytes) else _pcm_and_rate(source, party, sample_rate)[0]
    level = rms(pcm)
    assert level < SILENCE_RMS, f"{party or 'the audio'} is not silent (RMS {level:.4f})"


def assert_heard_wav(
    source: SimCall | bytes,
    wav: bytes,
    *,
    party: str | None = None,
    sample_rate: int | None = None,
    probe_s: float = 0.1,
) -> None:
    """Assert that the WAV's audio reached the party unchanged: a ``probe_s`` stretch from the
    middle of the WAV (at the recording's rate) appears byte for byte in what it heard."""
    pcm, rate = _pcm_and_rate(source, party, sample_rate)
    # The WAV's PCM as the sandbox converts it for the call (byte for byte what it plays).
    wav_pcm = Voice.from_wav(wav).convert(rate)
    n = int(rate * probe_s) * 2
    if len(wav_pcm) < n:
        raise ValueError(f"the WAV is shorter than the {probe_s:g} s probe")
    middle = (len(wav_pcm) // 2 - n // 2) & ~1
    probe = wav_pcm[middle : middle + n]
    assert probe in pcm, f"{party or 'the audio'} did not hear the WAV's content"


def assert_commands(
    call: SimCall, expected: Sequence[str], *, succeeded: bool | None = True
) -> None:
    """Assert the agent sent exactly ``expected`` commands (wire names like ``call.answer``),
    in order; with ``succeeded=True`` (default) also that each succeeded."""
    sent = [c["command"] for c in call.commands]
    assert sent == list(expected), f"agent sent {sent}, expected {list(expected)}"
    if succeeded is not None:
        wrong = [c for c in call.commands if bool(c["success"]) is not succeeded]
        assert not wrong, f"commands with success != {succeeded}: {wrong}"
