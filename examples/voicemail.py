"""After-hours voicemail: in business hours the caller is put through to the office; outside them
the agent takes a message and saves it as a WAV file.

    python examples/voicemail.py --demo      # two simulated calls: at 10:00 and at 22:00

Against a server (``--after-hours`` takes a message whatever the time):

    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/voicemail.py --voicemail-dir messages
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path

import _harness
import anyio

from telcoflow import audio
from telcoflow.sandbox import CalleeSpec, CallSpec, Voice
from telcoflow.testing import tone_seconds
from telcoflow_sdk import ActiveCall, WSSCallCommandError

log = logging.getLogger("voicemail")

OPENS, CLOSES = time(9, 0), time(18, 0)
#: The agent's "voice": tones standing in for recorded prompts.
GREETING_HZ, BEEP_HZ, GOODBYE_HZ = 660, 1000, 520

Clock = Callable[[], datetime]


def in_business_hours(now: datetime) -> bool:
    """Monday to Friday, 09:00 to 18:00."""
    return now.weekday() < 5 and OPENS <= now.time() < CLOSES


def speaking(call: ActiveCall) -> bool:
    """Whether audio the agent sent has not all been played yet."""
    return bool(call.get_send_audio_buffer_size() or call.playout_pending_bytes)


@dataclass
class Voicemail:
    """The agent. ``clock`` decides what "now" is: inject one to test either branch."""

    folder: Path
    clock: Clock = datetime.now
    message_seconds: float = 30.0
    ring_time_seconds: int = 20

    async def __call__(self, call: ActiveCall) -> None:
        await call.answer()
        now = self.clock()
        when = f"{now:%a %H:%M}"
        if in_business_hours(now):
            log.info("%s: %s is in business hours; ringing the office", call.call_id, when)
            try:
                await call.connect(ring_time_seconds=self.ring_time_seconds)
            except WSSCallCommandError as exc:
                log.info("%s: nobody picked up (%s)", call.call_id, exc.error_code)
            else:
                log.info("%s: put through; the agent leaves", call.call_id)
                await call.close()
                return
        else:
            log.info("%s: %s is after hours; taking a message", call.call_id, when)
        await self.take_message(call)

    async def take_message(self, call: ActiveCall) -> None:
        rate = call.sample_rate
        await call.send_audio(audio.tone(GREETING_HZ, 0.6, rate) + audio.tone(BEEP_HZ, 0.2, rate))
        message = bytearray()
        target = int(self.message_seconds * rate) * 2
        async for chunk in call.audio_stream():
            if speaking(call):
                continue  # what the caller says over the greeting is not the message
            message += chunk
            if len(message) >= target:
                break
        path = anyio.Path(self.folder) / f"{call.call_id}.wav"
        wav = audio.write_wav(None, message, rate)
        await path.write_bytes(wav)  # not blocking the event loop
        log.info("%s: saved %.1f s message to %s", call.call_id, len(message) / 2 / rate, path)
        if call.is_active:  # else the caller hung up mid-message: that is fine too
            await call.send_audio(audio.tone(GOODBYE_HZ, 0.3, rate))
            await call.wait_played()
            await call.disconnect()


# --- demo: one call at 10:00 on a Tuesday, one at 22:00 -------------------------------------------

CALLER_HZ, CALLEE_HZ, HELLO_HZ = 440, 880, 300
TUESDAY = datetime(2025, 6, 3)
TONES = {
    HELLO_HZ: "the caller's 'hello?'",
    CALLER_HZ: "the caller",
    CALLEE_HZ: "the office",
    GREETING_HZ: "greeting",
    BEEP_HZ: "beep",
    GOODBYE_HZ: "goodbye",
}


def caller_leaving_a_message(rate: int) -> Voice:
    """Says "hello?" over the greeting, waits for the beep, then speaks the message."""
    hello, pause = audio.tone(HELLO_HZ, 0.4, rate), audio.silence(0.5, rate)
    speech = hello + pause + audio.tone(CALLER_HZ, 2.5, rate)
    return Voice.from_wav(audio.write_wav(None, speech, rate), loop=False)


async def demo(d: _harness.Demo) -> None:
    with tempfile.TemporaryDirectory() as folder:
        at_10 = Voicemail(Path(folder), clock=lambda: TUESDAY.replace(hour=10), ring_time_seconds=5)
        spec = CallSpec(callee=CalleeSpec(answer_after_s=0.5, voice=Voice.tone(CALLEE_HZ)))
        sim = await d.call(spec, at_10, "at 10:00; the office answers after 0.5 s")
        d.describe(sim, TONES)
        d.check_commands(sim, ["call.answer", "call.connect", "call.close"], "at 10:00 the agent")
        left = d.left_at(sim)
        d.check(
            "the caller and the office talked after the agent left",
            d.heard_s(sim, "callee", CALLER_HZ, left) >= 0.3
            and d.heard_s(sim, "caller", CALLEE_HZ, left) >= 0.3,
        )
        d.check("no message was recorded", not [p async for p in anyio.Path(folder).iterdir()])

        at_22 = Voicemail(Path(folder), clock=lambda: TUESDAY.replace(hour=22), message_seconds=1.5)
        spec = CallSpec(caller=caller_leaving_a_message(d.rate))
        sim = await d.call(spec, at_22, "at 22:00; the caller leaves a message")
        d.describe(sim, TONES)
        d.check_commands(sim, ["call.answer", "call.disconnect"], "at 22:00 the agent")
        d.check(
            "the caller heard the greeting, the beep and goodbye",
            all(d.heard_s(sim, "caller", hz) >= 0.1 for hz in (GREETING_HZ, BEEP_HZ, GOODBYE_HZ)),
        )
        wavs = [p async for p in anyio.Path(folder).iterdir()]
        d.check("one message was saved", len(wavs) == 1, ", ".join(w.name for w in wavs))
        pcm, rate = audio.read_wav(await wavs[0].read_bytes()) if wavs else (b"", d.rate)
        voice, hello = tone_seconds(pcm, rate, CALLER_HZ), tone_seconds(pcm, rate, HELLO_HZ)
        d.check(
            "the message holds what the caller said after the beep, and only that",
            abs(len(pcm) / 2 / rate - 1.5) < 0.05 and voice >= 1.2 and hello == 0,
            f"{len(pcm) / 2 / rate:.2f} s, {voice:.1f} s of the caller, {hello:.1f} s of 'hello?'",
        )


def main() -> int:
    parser = _harness.parser(__doc__)
    parser.add_argument("--after-hours", action="store_true", help="always take a message")
    parser.add_argument("--voicemail-dir", type=Path, default=Path("voicemail"))
    args = parser.parse_args()
    clock: Clock = (lambda: datetime.now().replace(hour=22)) if args.after_hours else datetime.now
    if not _harness.wants_demo(args):
        args.voicemail_dir.mkdir(parents=True, exist_ok=True)
    return _harness.main(args, Voicemail(args.voicemail_dir, clock), demo)


if __name__ == "__main__":
    sys.exit(main())
