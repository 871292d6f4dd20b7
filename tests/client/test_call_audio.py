"""Call audio end to end: what the agent hears, what it says and who hears it, checked on the
sandbox's recordings of every party."""

from __future__ import annotations

import random
from array import array
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
import pytest

from telcoflow import CallState, TelcoflowClientConfig
from telcoflow.audio import tone, tone_level, write_wav
from telcoflow.events import AgentMode
from telcoflow.exceptions import BufferClosedError, BufferFullError
from telcoflow.sandbox import CalleeSpec, CallSpec, Sandbox, SimCall, Voice

from ..helpers import WAIT, CallInbox, serving

pytestmark = pytest.mark.anyio

RATE = 24000
FRAME = 960  # 20 ms at 24 kHz

#: Caller at 440 Hz, a callee that answers quickly at 880 Hz; the agent says 1000 Hz.
TWO_TONES = CallSpec(
    caller=Voice.tone(440), callee=CalleeSpec(answer_after_s=0.2, voice=Voice.tone(880))
)
AGENT_HZ = 1000
#: A tone a party hears measures about 0.25 (TONE_AMPLITUDE); one it does not hear, about 0.
HEARD = 0.1
NOT_HEARD = 0.01


def seconds(s: float, rate: int = RATE) -> int:
    """Bytes of PCM16 mono in ``s`` seconds."""
    return int(rate * s) * 2


def level(pcm: bytes, hz: float, rate: int = RATE) -> float:
    return tone_level(pcm, rate, hz)


async def recorded(sim: SimCall, n_bytes: int) -> None:
    """Wait until the sandbox has recorded ``n_bytes`` of every party's timeline."""
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: len(c.recordings["agent"]) >= n_bytes)


class Collector:
    """Reads an ``audio_stream()`` in the background, keeping every chunk in order."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.chunks: list[bytes] = []
        self.ended = anyio.Event()
        self._want = 0
        self._enough = anyio.Event()

    async def run(self) -> None:
        async for chunk in self.stream:
            self.chunks.append(chunk)
            if len(self.chunks) >= self._want:
                self._enough.set()
        self.ended.set()
        self._enough.set()

    async def count(self, n: int) -> list[bytes]:
        """Wait until ``n`` chunks have arrived; returns them all."""
        with anyio.fail_after(WAIT):
            while len(self.chunks) < n:
                assert not self.ended.is_set(), f"the stream ended after {len(self.chunks)} chunks"
                self._want, self._enough = n, anyio.Event()
                await self._enough.wait()
        return self.chunks

    def start(self, tg: anyio.abc.TaskGroup) -> Collector:
        tg.start_soon(self.run)
        return self


# --- what the agent hears -------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "frame"), [(8000, 320), (16000, 640), (24000, 960)])
async def test_audio_stream_yields_20ms_chunks_once_answered_and_nothing_while_pending(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], rate: int, frame: int
) -> None:
    async with serving(make_config(sample_rate=rate)) as (_, inbox):
        sim = await sandbox.create_call()
        call = await inbox.next()
        assert call.sample_rate == rate
        assert sim.sample_rate == rate
        async with anyio.create_task_group() as tg:
            heard = Collector(call.audio_stream()).start(tg)
            # 300 ms of ringing pass on the call's media clock: the agent hears nothing.
            await recorded(sim, len(sim.recordings["agent"]) + seconds(0.3, rate))
            assert sim.state is CallState.PENDING
            assert heard.chunks == []
            assert call.stats.frames_received == 0
            await call.answer()
            chunks = await heard.count(25)
            assert [len(c) for c in chunks[:25]] == [frame] * 25
            assert level(b"".join(chunks[:25]), 440, rate) > HEARD
            await call.disconnect()


async def test_agent_hears_the_caller_once_answered_and_the_callee_once_connected(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    await sandbox.create_call(TWO_TONES)
    call = await inbox.next()
    async with anyio.create_task_group() as tg:
        heard = Collector(call.audio_stream()).start(tg)
        await call.answer()
        answered = b"".join((await heard.count(25))[:25])
        assert level(answered, 440) > HEARD
        assert level(answered, 880) < NOT_HEARD
        await call.connect(ring_time_seconds=2)
        mark = len(heard.chunks) + 2  # a chunk or two may still be from before the callee
        connected = b"".join((await heard.count(mark + 25))[mark : mark + 25])
        assert level(connected, 440) > HEARD
        assert level(connected, 880) > HEARD
        await call.disconnect()


async def test_isolated_audio_mode_keeps_the_legs_apart(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with serving(make_config(audio_mode="isolated")) as (_, inbox):
        await sandbox.create_call(TWO_TONES)
        call = await inbox.next()
        async with anyio.create_task_group() as tg:
            caller_leg = Collector(call.audio_stream()).start(tg)
            callee_leg = Collector(call.audio_stream("callee")).start(tg)
            mixed = Collector(call.audio_stream("mixed")).start(tg)
            await call.answer()
            answered = b"".join((await caller_leg.count(25))[:25])
            assert level(answered, 440) > HEARD
            assert level(answered, 880) < NOT_HEARD
            assert callee_leg.chunks == []  # no callee yet
            await call.connect(ring_time_seconds=2)
            mark = len(caller_leg.chunks) + 2
            callee = await callee_leg.count(25)
            assert all(len(c) == FRAME for c in callee)
            assert level(callee[0], 880) > HEARD  # nothing was sent on this leg before connect
            callee_audio = b"".join(callee[:25])
            assert level(callee_audio, 880) > HEARD
            assert level(callee_audio, 440) < NOT_HEARD
            caller_audio = b"".join((await caller_leg.count(mark + 25))[mark : mark + 25])
            assert level(caller_audio, 440) > HEARD
            assert level(caller_audio, 880) < NOT_HEARD
            # Channel 0 comes in isolated mode too: everything the agent hears, mixed.
            both = b"".join((await mixed.count(mark + 25))[mark : mark + 25])
            assert level(both, 440) > HEARD
            assert level(both, 880) > HEARD
            await call.disconnect()


@pytest.mark.parametrize("ending", ["caller_hangup", "close_answered", "close_connected"])
async def test_audio_stream_ends_when_the_call_ends_for_the_agent(
    sandbox: Sandbox, inbox: CallInbox, ending: str
) -> None:
    sim = await sandbox.create_call(TWO_TONES)
    call = await inbox.next()
    await call.answer()
    if ending == "close_connected":
        await call.connect(ring_time_seconds=2)
    async with anyio.create_task_group() as tg:
        heard = Collector(call.audio_stream()).start(tg)
        await heard.count(1)
        if ending == "caller_hangup":
            await sim.hangup_caller()
        else:
            await call.close()
        with anyio.fail_after(WAIT):
            await heard.ended.wait()
    assert call.state is CallState.DISCONNECTED
    if ending == "close_connected":
        assert sim.state is CallState.CONNECTED  # the humans stay; the agent's stream ends


# --- what the agent says --------------------------------------------------------------------------


def distinctive_pcm(seconds_: float) -> bytes:
    """Non-periodic PCM with no zero sample: any gap, repeat, loss or reorder shows."""
    rng = random.Random(20240601)
    samples = array("h")
    for _ in range(int(RATE * seconds_)):
        value = rng.randint(300, 12000)
        samples.append(value if rng.random() < 0.5 else -value)
    return samples.tobytes()


def first_sound(pcm: bytes) -> int:
    """Byte offset of the first non-zero sample, or -1."""
    for i, sample in enumerate(array("h", pcm)):
        if sample:
            return 2 * i
    return -1


def first_difference(a: bytes, b: bytes) -> int:
    pairs = enumerate(zip(a, b, strict=False))
    return next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


async def test_echo_reaches_the_caller_intact_and_in_order(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    pattern = distinctive_pcm(1.2)
    sim = await sandbox.create_call(
        caller=Voice.from_wav(write_wav(None, pattern, RATE), loop=False)
    )
    call = await inbox.next()
    await call.answer()
    start = len(sim.recordings["caller"])  # everything before is silence
    heard = bytearray()
    cushion = 5 * FRAME  # a 100 ms jitter buffer, so that scheduling hiccups leave no gaps
    with anyio.fail_after(WAIT):
        async for chunk in call.audio_stream():
            heard += chunk
            if len(heard) == cushion:
                await call.send_audio(bytes(heard))
            elif len(heard) > cushion:
                await call.send_audio(chunk)
            if len(heard) >= len(pattern) + seconds(0.2):
                break
    # The agent heard the caller's voice from its first sample.
    assert heard[: len(pattern)] == pattern
    await recorded(sim, start + len(pattern) + seconds(0.5))
    caller_heard = sim.recording("caller")[start:]
    offset = first_sound(caller_heard)
    assert 0 <= offset <= seconds(0.3), f"echo started {offset} bytes after answering"
    echoed = caller_heard[offset : offset + len(pattern)]
    assert len(echoed) == len(pattern)
    assert echoed == pattern, f"echo differs from byte {first_difference(echoed, pattern)}"
    assert sim.stats.excess_bytes == 0


async def test_send_audio_rejects_an_odd_length(sandbox: Sandbox, inbox: CallInbox) -> None:
    await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    with pytest.raises(ValueError, match="odd"):
        await call.send_audio(b"\x00" * 961)
    assert call.get_send_audio_buffer_size() == 0
    await call.send_audio(b"")  # an empty chunk is whole samples: accepted, nothing queued
    assert call.get_send_audio_buffer_size() == 0


async def test_send_audio_past_capacity_raises_and_queues_nothing(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    capacity = 20000
    async with serving(make_config(send_buffer_bytes=capacity)) as (_, inbox):
        sim = await sandbox.create_call()
        call = await inbox.next()
        # While PENDING the sandbox's playout does not drain: once its first credit is used up,
        # what the agent queues stays queued.
        sent = 13600
        await call.send_audio(b"\x01\x00" * (sent // 2))
        with anyio.fail_after(WAIT):
            await sim.wait_for(
                lambda c: (
                    c.agent is not None
                    and len(c.agent.playout) > 0
                    and len(c.agent.playout) + call.get_send_audio_buffer_size() == sent
                )
            )
        queued = call.get_send_audio_buffer_size()
        assert 0 < queued < capacity
        with pytest.raises(BufferFullError):
            await call.send_audio(bytes(capacity - queued + 2))
        assert call.get_send_audio_buffer_size() == queued
        await call.send_audio(bytes(capacity - queued))
        assert call.get_send_audio_buffer_size() == capacity
        with pytest.raises(BufferFullError):
            await call.send_audio(b"\x00\x00")
        assert call.get_send_audio_buffer_size() == capacity
        await call.clear_send_audio_buffer()
        assert call.get_send_audio_buffer_size() == 0


async def test_send_audio_after_the_call_ended_raises_closed(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        await call.wait_terminated()
    with pytest.raises(BufferClosedError):
        await call.send_audio(bytes(FRAME))
    assert call.get_send_audio_buffer_size() == 0


async def test_clear_send_audio_buffer_stops_the_agent_at_once(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(caller=Voice.silence())
    call = await inbox.next()
    await call.answer()
    start = len(sim.recordings["caller"])
    await call.send_audio(tone(AGENT_HZ, 3.0, RATE))
    await recorded(sim, start + seconds(0.4))
    assert (
        level(sim.recording("caller")[start + seconds(0.1) : start + seconds(0.4)], AGENT_HZ)
        > HEARD
    )
    assert call.get_send_audio_buffer_size() > seconds(1.0)  # most of the tone is still ahead
    await call.clear_send_audio_buffer()
    assert call.get_send_audio_buffer_size() == 0
    cleared = len(sim.recordings["caller"])
    await recorded(sim, cleared + seconds(0.4))
    # 60 ms for what was already on the wire, then silence: the sandbox's playout (200 ms of
    # tone) was dropped as well as the SDK's buffer.
    after = sim.recording("caller")[cleared + seconds(0.06) : cleared + seconds(0.4)]
    assert level(after, AGENT_HZ) < NOT_HEARD
    # Audio queued afterwards plays again.
    await call.send_audio(tone(AGENT_HZ, 0.3, RATE))
    again = len(sim.recordings["caller"])
    await recorded(sim, again + seconds(0.3))
    assert level(sim.recording("caller")[again : again + seconds(0.3)], AGENT_HZ) > HEARD


# --- who hears the agent --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "caller_hears", "callee_hears"),
    [
        pytest.param(None, True, False, id="answered"),
        pytest.param(AgentMode.BARGE, True, True, id="barge"),
        pytest.param(AgentMode.WHISPER, False, True, id="whisper"),
        pytest.param(AgentMode.SPY, False, False, id="spy"),
    ],
)
async def test_who_hears_the_agent(
    sandbox: Sandbox,
    inbox: CallInbox,
    mode: AgentMode | None,
    caller_hears: bool,
    callee_hears: bool,
) -> None:
    sim = await sandbox.create_call(TWO_TONES)
    call = await inbox.next()
    await call.answer()
    if mode is not None:
        await call.connect(ring_time_seconds=2)
        await {
            AgentMode.BARGE: call.barge,
            AgentMode.WHISPER: call.whisper,
            AgentMode.SPY: call.spy,
        }[mode]()
    assert call.agent_mode is mode
    assert sim.agent_mode is mode
    mark = len(sim.recordings["caller"])
    await call.send_audio(tone(AGENT_HZ, 1.0, RATE))
    begin, end = mark + seconds(0.1), mark + seconds(0.6)
    await recorded(sim, end)
    caller = sim.recording("caller")[begin:end]
    callee = sim.recording("callee")[begin:end]
    assert sim.stats.agent_bytes_received >= seconds(0.6)  # the agent did speak throughout

    caller_level, callee_level = level(caller, AGENT_HZ), level(callee, AGENT_HZ)
    if caller_hears:
        assert caller_level > HEARD, f"the caller should hear the agent ({caller_level:.3f})"
    else:
        assert caller_level < NOT_HEARD, (
            f"the caller should not hear the agent ({caller_level:.3f})"
        )
    if callee_hears:
        assert callee_level > HEARD, f"the callee should hear the agent ({callee_level:.3f})"
    else:
        assert callee_level < NOT_HEARD, (
            f"the callee should not hear the agent ({callee_level:.3f})"
        )

    # The windows are live audio: the humans hear each other once connected.
    if mode is None:
        assert level(callee, 440) < NOT_HEARD  # no callee on the call yet
    else:
        assert level(caller, 880) > HEARD
        assert level(callee, 440) > HEARD


async def test_after_the_agent_closes_the_humans_still_hear_each_other(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(TWO_TONES)
    call = await inbox.next()
    await call.answer()
    await call.connect(ring_time_seconds=2)
    await call.close()
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: c.agent is None)
    mark = len(sim.recordings["caller"])
    await recorded(sim, mark + seconds(0.3))
    assert sim.state is CallState.CONNECTED
    assert level(sim.recording("caller")[mark : mark + seconds(0.3)], 880) > HEARD
    assert level(sim.recording("callee")[mark : mark + seconds(0.3)], 440) > HEARD


async def test_audio_heard_before_the_call_ended_is_still_delivered(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    stream = call.audio_stream()
    await call.answer()
    with anyio.fail_after(WAIT):
        first = await anext(stream)
    # The application falls behind: 300 ms of audio arrive while it does something else.
    await recorded(sim, len(sim.recordings["agent"]) + seconds(0.3))
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        await call.wait_terminated()
    received = call.stats.frames_received
    assert received >= 15
    with anyio.fail_after(WAIT):
        rest = [chunk async for chunk in stream]
    # Kept audio is delivered, then the stream ends; nothing was dropped for overflow.
    assert call.stats.dropped_inbound_chunks == 0
    assert 1 + len(rest) == received, f"{received - 1 - len(rest)} chunks lost at the call's end"
    assert level(first + b"".join(rest), 440) > HEARD
