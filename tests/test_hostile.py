"""The live SDK against a hostile server (``tests/hostile_server.py``): garbage, wrong types, huge
numbers, unknown ids and channels, broken framing, floods and oversized messages on both
connections.

What must hold whatever the server sends: nothing raises out of ``async with`` except on purpose;
commands succeed, fail with a ``WSSError`` or time out, and never hang; a connection that survives
garbage still works afterwards; inbound audio stays within ``audio_queue_chunks``; messages past
``MAX_MESSAGE_BYTES`` close the connection with 1009, and a call that loses its media connection
ends exactly once (``media_lost``) while the client goes on; leaving the client leaves no task
behind. Random barrages are seeded: a failure names its seed, and the seed reproduces it.
"""

from __future__ import annotations

import logging
import random
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sniffio

from telcoflow import (
    ActiveCall,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSCallClosedError,
    WSSConnectionError,
    WSSError,
    events,
)
from telcoflow._core import CHANNEL_CALLEE, CHANNEL_CALLER, MAX_AUDIO_PAYLOAD_BYTES
from telcoflow._net import MAX_MESSAGE_BYTES, ConnectionClosed

from .conftest import WAIT, live_task_names
from .hostile_server import (
    OP_BINARY,
    OP_CONT,
    SENT,
    TRAPS,
    ControlSession,
    Frame,
    HostileServer,
    MediaSession,
    audio_flood,
    control_garbage,
    fatal_framing,
    fatal_media_frames,
    hostile_responder,
    media_garbage,
    message,
    open_hostile_server,
    random_control_frame,
    random_media_frame,
    raw_frame,
)

pytestmark = pytest.mark.anyio

#: Commands wait this long for an answer: short, since the hostile server often sends none.
COMMAND_TIMEOUT = 0.5

#: The random barrages: this many seeds of this many frames each (per backend).
SEEDS = range(20)
FRAMES_PER_SEED = 200

#: Close codes the client sends when it gives up on a connection (RFC 6455 section 7.4.1).
TOO_BIG, PROTOCOL_ERROR, INVALID_DATA = 1009, 1002, 1007


# --- measuring what is left behind ----------------------------------------------------------------


def sdk_tasks() -> list[str]:
    """Live tasks running the SDK's code (both backends name a task ``module.qualname``)."""
    return sorted(n for n in live_task_names() if n.startswith("telcoflow."))


#: Hostile inputs sent by each seed of :func:`test_random_barrage`, by backend and seed.
RANDOM_SENT: dict[tuple[str, int], int] = {}


class _Summary:
    """A pytest plugin that prints this module's figures in the terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line)


_SUMMARY = _Summary()


@pytest.fixture(scope="module", autouse=True)
def report_hostile_frames(request: pytest.FixtureRequest) -> Iterator[None]:
    """Count the hostile inputs this module sends and print the figure at the end of the run."""
    if not request.config.pluginmanager.is_registered(_SUMMARY):
        request.config.pluginmanager.register(_SUMMARY, "hostile-server-summary")
    before = SENT.copy()
    yield
    sent = SENT - before
    total, flood = sum(sent.values()), sent["audio-flood"]
    _SUMMARY.lines.append(
        f"hostile server: {total} hostile inputs sent ({flood} of them well-formed audio in "
        f"floods nobody read, {total - flood} malformed or adversarial frames of {len(sent)} "
        f"kinds); random barrages: {len(RANDOM_SENT)} runs, {sum(RANDOM_SENT.values())} inputs"
    )


@pytest.fixture(autouse=True)
def quiet_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The client logs every bad frame at WARNING: thousands here. Keep ERROR and above, and
    fail on any (a handler or task that raised inside the SDK)."""
    caplog.set_level(logging.ERROR, logger="telcoflow")
    yield
    errors = [r for r in caplog.records if r.name.startswith("telcoflow")]
    assert errors == [], [r.getMessage() for r in errors]


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` (what it watches has no event to wait on) until true, bounded."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


# --- a client under test --------------------------------------------------------------------------


class Harness:
    """A client of a hostile server, with what it delivered: calls and their terminations."""

    def __init__(self, server: HostileServer, client: TelcoflowClient) -> None:
        self.server = server
        self.client = client
        self.terminated: dict[str, list[str]] = {}
        self.delivered: list[str] = []
        self._send, self._receive = anyio.create_memory_object_stream[ActiveCall](1000)
        client.on(events.INCOMING_CALL, self._incoming)

    def _incoming(self, call: ActiveCall) -> None:
        self.delivered.append(call.call_id)
        reasons = self.terminated.setdefault(call.call_id, [])
        call.on(events.CALL_TERMINATED, reasons.append)
        self._send.send_nowait(call)

    async def next_call(self, timeout: float = WAIT) -> ActiveCall:
        with anyio.fail_after(timeout):
            return await self._receive.receive()

    async def call_on(self, control: ControlSession) -> tuple[ActiveCall, MediaSession]:
        """Offer a well-formed call; the client takes it and the server sees its media."""
        call_id = await self.server.offer(control)
        media = await self.server.next_media()
        call = await self.next_call()
        assert call.call_id == call_id == media.call_id
        return call, media

    async def wait_terminations(self, call_id: str, n: int = 1) -> list[str]:
        """The CALL_TERMINATED payloads of ``call_id`` once ``n`` have arrived (and a moment for
        a duplicate to show up)."""
        await wait_until(lambda: len(self.terminated.get(call_id, ())) >= n)
        await anyio.sleep(0.02)
        return self.terminated[call_id]

    def close(self) -> None:
        self._send.close()
        self._receive.close()


def make_config(server: HostileServer, **options: Any) -> TelcoflowClientConfig:
    options.setdefault("command_timeout", COMMAND_TIMEOUT)
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("reconnect", {"initial_delay": 0.05, "max_delay": 0.2})
    options.setdefault("base_url", server.base_url)
    return TelcoflowClientConfig.sandbox(api_key="k", connector_uuid="c", **options)


@asynccontextmanager
async def hostile_client(seed: int = 0, **options: Any) -> AsyncIterator[Harness]:
    """A hostile server and a client of it. On the way out: the client raised nothing, and
    neither the client nor the server left a task behind."""
    tasks_before = len(live_task_names())
    async with open_hostile_server(seed) as server:
        client = TelcoflowClient(make_config(server, **options))
        harness = Harness(server, client)
        try:
            async with client:
                yield harness
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"seed {seed}: raised inside the client: {exc!r}") from exc
        finally:
            harness.close()
        assert sdk_tasks() == [], f"seed {seed}: the client left tasks behind"
        assert client.calls == []
    assert len(live_task_names()) == tasks_before, f"seed {seed}: tasks left behind"


async def command_outcome(coro: Any, timeout: float) -> str:
    """``"ok"`` or the name of the ``WSSError`` it raised; anything else, or a hang, fails."""
    with anyio.fail_after(timeout):
        try:
            await coro
        except WSSError as exc:
            return type(exc).__name__
    return "ok"


# --- control plane --------------------------------------------------------------------------------


async def test_control_garbage_is_ignored_and_later_offers_are_delivered() -> None:
    rng = random.Random(1)
    async with hostile_client(seed=1) as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        frames = control_garbage(rng, live_call_id=call.call_id, trap_url=h.server.url)
        assert await h.server.send(control.conn, frames) == len(frames)
        second, _ = await h.call_on(control)  # the control connection still delivers offers
        assert second.call_id != call.call_id
        assert h.client.reconnects == 0
        assert len(h.server.controls) == 1
        assert not control.closed.is_set()
        # The call offered again and again was never opened twice.
        assert h.server.handshakes.count(f"/media/{call.call_id}") == 1
        assert call.is_active
        assert h.delivered == [call.call_id, second.call_id]


async def test_duplicate_offers_for_a_live_or_opening_call_open_one_media_connection() -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call_id = "dup"
        for _ in range(20):  # while the first is still opening, then once it is open
            await h.server.offer(control, call_id, token="same")
        media = await h.server.next_media()
        call = await h.next_call()
        for _ in range(20):
            await h.server.offer(control, call_id, token="same")
        await h.server.offer(control)  # a different call still gets through
        await h.next_call()
        assert call.call_id == media.call_id == call_id
        assert h.server.handshakes.count(f"/media/{call_id}") == 1
        assert h.delivered.count(call_id) == 1


@pytest.mark.parametrize(
    ("before", "enters"),
    [
        pytest.param([message("future.type", {})], True, id="unknown-type"),
        pytest.param([message("error", {"code": "X", "message": "m"})], False, id="error"),
        pytest.param(["{"], False, id="not-json"),
        pytest.param([message("call.incoming", {"callId": 5})], False, id="bad-offer"),
    ],
)
async def test_frames_before_setup_done_enter_or_refuse_cleanly(
    before: list[str], enters: bool
) -> None:
    """During setup an unknown type is ignored; a refusal or a broken frame is the documented
    ``WSSConnectionError`` on entry, and nothing is left running."""
    tasks_before = len(live_task_names())
    async with open_hostile_server() as server:
        server.before_setup_done = [Frame("before-setup.done", text) for text in before]
        client = TelcoflowClient(make_config(server))
        if enters:
            async with client:
                assert client.connected
        else:
            with pytest.raises(WSSConnectionError):
                async with client:
                    pass
        assert sdk_tasks() == []
    assert len(live_task_names()) == tasks_before


async def test_a_wss_base_url_on_a_server_without_tls_is_a_connection_error() -> None:
    """Found here: the peer hanging up in the TLS handshake raised ``anyio.EndOfStream`` out of
    ``async with`` instead of the documented ``WSSConnectionError``."""
    async with open_hostile_server() as server:
        config = make_config(server, base_url=server.base_url.replace("ws://", "wss://"))
        with pytest.raises(WSSConnectionError):
            async with TelcoflowClient(config):
                pass
        assert sdk_tasks() == []


async def test_oversized_control_message_closes_with_1009_and_the_client_reconnects() -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        big = Frame("oversized-text", message("x", {"pad": "a" * MAX_MESSAGE_BYTES}))
        await h.server.send(control.conn, [big])
        with anyio.fail_after(WAIT):
            await control.closed.wait()
        assert control.close_code == TOO_BIG
        again = await h.server.next_control()  # the client came back on its own...
        second, _ = await h.call_on(again)  # ...and takes calls
        assert h.client.reconnects == 1
        assert call.is_active, "a control-plane outage does not end calls in progress"
        assert h.terminated[call.call_id] == []
        assert second.is_active


# --- offers the client cannot take ----------------------------------------------------------------


def _unreachable_offers() -> list[Any]:
    offers: list[Any] = [pytest.param({"media_url": f"@{path}"}, id=path) for path in TRAPS]
    offers += [
        pytest.param({"media_url": "ws://127.0.0.1:1/refused"}, id="refused"),
        pytest.param({"media_url": "http://127.0.0.1:1/"}, id="http-scheme"),
        pytest.param({"media_url": "ws:///no-host"}, id="no-host"),
        pytest.param({"media_url": "ws://" + "a" * 70 + ".invalid/"}, id="label-too-long"),
        pytest.param({"media_url": "ws://a\x00b/"}, id="nul-in-host"),
        pytest.param({"token": "a\r\nx-injected: 1"}, id="crlf-in-token"),
        pytest.param({"token": "\x00"}, id="nul-in-token"),
        # When this module was written, each of these crashed the client: a ValueError,
        # anyio.EndOfStream or UnicodeEncodeError escaped the task opening the media connection.
        pytest.param({"media_url": "ws://127.0.0.1:99999/"}, id="port-out-of-range"),
        pytest.param({"media_url": "ws://[::1/"}, id="bad-ipv6-literal"),
        pytest.param({"media_url": "wss@/close"}, id="tls-to-a-plain-server-that-closes"),
        pytest.param({"media_url": "wss@/garbage"}, id="tls-to-a-plain-http-server"),
        pytest.param({"token": "t\ud800"}, id="lone-surrogate-in-token"),
    ]
    return offers


@pytest.mark.parametrize("offer", _unreachable_offers())
async def test_offers_with_unusable_media_urls_are_dropped_and_the_client_goes_on(
    offer: dict[str, str],
) -> None:
    async with hostile_client(connect_timeout=0.5) as h:
        control = await h.server.next_control()
        url = offer.get("media_url")
        if url is not None and url.startswith(("@", "wss@")):
            url = h.server.url(url.split("@", 1)[1])
            if offer["media_url"].startswith("wss@"):
                url = url.replace("ws://", "wss://", 1)
        bad = await h.server.offer(control, "unusable", media_url=url, token=offer.get("token"))
        call, _ = await h.call_on(control)
        # Past the connect timeout for /hang; the others fail (or crash the client) at once.
        await anyio.sleep(0.6 if offer.get("media_url") == "@/hang" else 0.05)
        assert h.delivered == [call.call_id], f"{bad} must not be delivered"
        assert h.client.get_call(bad) is None
        assert h.client.reconnects == 0


async def test_offer_ended_while_its_media_connection_opens_is_never_delivered() -> None:
    async with hostile_client(connect_timeout=2.0) as h:
        control = await h.server.next_control()
        bad = await h.server.offer(control, "ringing", media_url=h.server.url("/hang"))
        await anyio.sleep(0.05)
        await h.server.end_offer(control, bad)
        await h.server.end_offer(control, "never-offered")
        call, _ = await h.call_on(control)
        await anyio.sleep(0.05)
        assert h.delivered == [call.call_id]


# --- media plane ----------------------------------------------------------------------------------


async def test_media_garbage_with_commands_in_flight_leaves_the_call_usable() -> None:
    rng = random.Random(2)
    async with hostile_client(seed=2) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.responder = hostile_responder(random.Random(3))
        outcomes: Counter[str] = Counter()
        stop = anyio.Event()

        async def commands() -> None:
            actions = [
                call.answer,
                call.whisper,
                call.barge,
                call.spy,
                call.clear_send_audio_buffer,
            ]
            while not stop.is_set():
                action = rng.choice(actions)
                outcomes[await command_outcome(action(), COMMAND_TIMEOUT + 2)] += 1

        frames = media_garbage(rng, media.command_ids)
        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(commands)
                for i in range(0, len(frames), 25):
                    await h.server.send(media.conn, frames[i : i + 25], batch=5)
                    await anyio.sleep(0.002)
                stop.set()
        assert set(outcomes) <= {
            "ok",
            "WSSCallCommandError",
            "WSSCallCommandTimeoutError",
            "WSSCallClosedError",
        }, outcomes
        assert sum(outcomes.values()) > 0
        # The connection survived: a well-formed response to a real command resolves it.
        media.responder = None
        media.drop_pending_commands()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.barge)
            cmd = await media.next_command()
            assert cmd.command == "agent.barge"
            await media.respond(cmd.command_id, True)
        assert call.is_active
        assert call.stats.protocol_errors > 0
        assert h.terminated[call.call_id] == []
        assert not media.closed.is_set()


async def test_hostile_command_responses_each_have_a_documented_outcome() -> None:
    async with hostile_client(command_timeout=0.2) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)

        async def answered_with(*frames: str) -> str:
            """Run ``whisper()``; answer it with ``frames`` (``{id}`` is its command id)."""
            result: list[str] = []

            async def run() -> None:
                result.append(await command_outcome(call.whisper(), 3.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                cmd = await media.next_command()
                for text in frames:
                    await h.server.send(
                        media.conn, [Frame("response", text.replace("{id}", cmd.command_id))]
                    )
            return result[0]

        ok = '{"type":"command_response","data":{"command_id":"{id}","success":true}}'
        fail = (
            '{"type":"command_response","data":{"command_id":"{id}","success":false,'
            '"error_code":"%s","error_message":"m"}}'
        )
        assert await answered_with(ok) == "ok"
        assert await answered_with(ok, fail % "INVALID_STATE") == "ok"  # the duplicate is ignored
        assert await answered_with(fail % "INVALID_STATE", ok) == "WSSCallCommandError"
        assert await answered_with(fail % "NEW_CODE") == "WSSCallCommandError"
        assert await answered_with(fail % "TIMEOUT") == "WSSCallCommandTimeoutError"
        assert await answered_with(ok.replace("true", '"yes"')) == "WSSCallCommandTimeoutError"
        assert await answered_with(ok.replace("{id}", "{id}x")) == "WSSCallCommandTimeoutError"
        assert await answered_with(ok.replace("true", 'true,"result":1e400')) == "ok"
        assert await answered_with(ok.replace('"{id}"', "10" + "0" * 400)) == (
            "WSSCallCommandTimeoutError"
        )
        assert await answered_with() == "WSSCallCommandTimeoutError"
        assert call.is_active
        assert await answered_with(fail % "CALL_TERMINATED") == "WSSCallClosedError"
        assert call.is_active  # the server's word on one command; the call ends by call.terminated
        await media.terminate("caller_hangup")
        assert await h.wait_terminations(call.call_id) == ["caller_hangup"]
        with pytest.raises(WSSCallClosedError):
            await call.whisper()


@pytest.mark.parametrize("mode", ["mixed", "isolated"])
async def test_audio_flood_nobody_reads_stays_within_audio_queue_chunks(mode: str) -> None:
    chunks = 100
    channels = [0] if mode == "mixed" else [CHANNEL_CALLER, CHANNEL_CALLEE]
    flood = 5000 // len(channels)  # frames per channel, nobody reading
    async with hostile_client(audio_mode=mode, audio_queue_chunks=chunks) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        frames = [f for channel in channels for f in audio_flood(flood, channel=channel)]
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for i in range(0, len(frames), 100):
                await h.server.send(media.conn, frames[i : i + 100], batch=100)
            total = len(frames)
            await wait_until(lambda: call.stats.frames_received >= total)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        del frames
        queued = len(channels) * chunks
        assert call.stats.dropped_inbound_chunks == len(channels) * flood - queued
        # Unbounded, the flood would hold ~5 MB; bounded, ~0.1 MB per channel.
        assert peak < 2_000_000, f"peak {peak} bytes during the flood"
        assert call.is_active
        await media.terminate("caller_hangup")
        await h.wait_terminations(call.call_id)
        for channel, leg in zip(channels, ("caller", "callee"), strict=False):
            stream = call.audio_stream(None if mode == "mixed" else leg)  # type: ignore[arg-type]
            kept = [int.from_bytes(chunk[:4], "big") async for chunk in stream]
            assert kept == list(range(flood - chunks, flood)), f"channel {channel}: drop-oldest"


@pytest.mark.parametrize("kind", ["oversized-binary", "oversized-text", "oversized-fragmented"])
async def test_oversized_media_message_closes_with_1009_and_ends_the_call_once(kind: str) -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        (frame,) = [f for f in fatal_media_frames(random.Random(0)) if f.kind == kind]
        assert len(frame.payload) > MAX_MESSAGE_BYTES
        await h.server.send(media.conn, [frame])
        assert await h.wait_terminations(call.call_id) == ["media_lost"]
        with anyio.fail_after(WAIT):
            await media.closed.wait()
        assert media.close_code == TOO_BIG
        assert call.state is CallState.DISCONNECTED
        assert h.client.get_call(call.call_id) is None
        second, _ = await h.call_on(control)  # the client goes on
        assert second.is_active


@pytest.mark.parametrize(
    "kind", [f.kind for f in fatal_framing(random.Random(0))] + ["abrupt-close", "clean-close"]
)
async def test_broken_media_framing_ends_the_call_once_as_media_lost(kind: str) -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        if kind == "abrupt-close":
            await media.conn.abort()
        elif kind == "clean-close":
            await media.conn.aclose(1000, "bye")  # without call.terminated first
        else:
            (frame,) = [f for f in fatal_framing(random.Random(0)) if f.kind == kind]
            await h.server.send(media.conn, [frame])
        assert await h.wait_terminations(call.call_id) == ["media_lost"]
        with anyio.fail_after(WAIT):
            await media.closed.wait()
        if kind == "raw-invalid-utf8":
            assert media.close_code == INVALID_DATA
        elif kind.startswith("raw-"):
            assert media.close_code == PROTOCOL_ERROR
        second, _ = await h.call_on(control)
        assert second.is_active
        assert h.client.reconnects == 0


@pytest.mark.parametrize("how", ["leave", "force_disconnect"])
async def test_ending_a_call_while_its_audio_streams_in_never_crashes_the_client(how: str) -> None:
    """Found here: audio that arrives as another task ends the call (leaving the client, or
    ``force_disconnect()``) hit the closed audio queue, and ``ClosedResourceError`` came out of
    ``async with TelcoflowClient``."""
    rng = random.Random(4)
    for attempt in range(15):
        async with hostile_client(seed=attempt) as h:
            control = await h.server.next_control()
            call, media = await h.call_on(control)
            h.server.start_soon(media.stream_audio)
            await anyio.sleep(rng.random() * 0.01)
            if how == "force_disconnect":
                await call.force_disconnect()
                assert await h.wait_terminations(call.call_id) == ["agent_force_disconnect"]


async def test_a_message_of_endless_empty_fragments_does_not_grow_memory() -> None:
    """Each empty continuation frame costs the server 2 bytes and carries no payload, so
    MAX_MESSAGE_BYTES never trips; the client must not keep something per fragment regardless."""
    fragments = 25_000
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        start = Frame("raw-fragment-start", raw_frame(OP_BINARY, b"", fin=False), raw=True)
        empties = Frame("raw-empty-fragments", raw_frame(OP_CONT, b"", fin=False) * 5_000, raw=True)
        end = Frame("raw-fragment-end", raw_frame(OP_CONT, b"\x00" * 961), raw=True)
        await h.server.send(media.conn, [start])
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            await h.server.send(media.conn, [empties] * (fragments // 5_000))
            try:
                # Answered once the client has read every fragment (or set when it closes).
                pong = await media.conn.ping(b"after the fragments")
                with anyio.fail_after(WAIT):
                    await pong.wait()
            except ConnectionClosed:
                pass
            held = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        await h.server.send(media.conn, [end])
        if media.conn.closed is not None:  # the client refused the message: fine, if as too big
            with anyio.fail_after(WAIT):
                await media.closed.wait()
            assert media.close_code == TOO_BIG
            assert await h.wait_terminations(call.call_id) == ["media_lost"]
        else:
            assert held < 100_000, (
                f"the client holds {held} bytes for an unfinished message of {fragments} empty "
                f"fragments ({2 * fragments} bytes on the wire, no payload): it grows without "
                f"bound"
            )
            assert call.is_active


# --- random barrages ------------------------------------------------------------------------------


def ok_response(command_id: str) -> str:
    return message("command_response", {"command_id": command_id, "success": True})


ACTIONS = ("answer", "connect", "whisper", "barge", "spy", "interrupt", "send_audio", "buffer")


async def _act(call: ActiveCall, rng: random.Random) -> str:
    action = rng.choice(ACTIONS)
    if action == "connect":
        return await command_outcome(call.connect(ring_time_seconds=1), 1 + COMMAND_TIMEOUT + 2)
    if action == "interrupt":
        return await command_outcome(call.clear_send_audio_buffer(), COMMAND_TIMEOUT + 2)
    if action == "send_audio":
        pcm = bytes(rng.choice((2, 960, 9600, 480_000)))
        return await command_outcome(call.send_audio(pcm), 1.0)
    if action == "buffer":
        assert call.get_send_audio_buffer_size() >= 0
        await anyio.sleep(0.01)
        return "ok"
    return await command_outcome(getattr(call, action)(), COMMAND_TIMEOUT + 2)


#: What the client may answer a hostile server with; anything else fails the barrage.
ALLOWED_OUTCOMES = {
    "ok",
    "WSSCallCommandError",
    "WSSCallCommandTimeoutError",
    "WSSCallClosedError",
    "BufferFullError",
}


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_barrage(seed: int) -> None:
    rng = random.Random(seed)
    sent_before = sum(SENT.values())
    async with hostile_client(seed) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.responder = hostile_responder(random.Random(seed + 10_000))
        outcomes: Counter[str] = Counter()
        stop = anyio.Event()
        sent: list[Frame] = []

        idle = anyio.Event()

        async def activity() -> None:
            act_rng = random.Random(seed + 20_000)
            while not stop.is_set():
                outcomes[await _act(call, act_rng)] += 1
            idle.set()

        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(activity)
                for i in range(FRAMES_PER_SEED):
                    if rng.random() < 0.4:
                        frame = random_control_frame(
                            rng, live_call_id=call.call_id, trap_url=h.server.url
                        )
                        conn = control.conn
                    else:
                        frame = random_media_frame(rng, media.command_ids)
                        conn = media.conn
                    sent.append(frame)
                    if await h.server.send(conn, [frame]) != 1:
                        which = "control" if conn is control.conn else "media"
                        pytest.fail(
                            f"seed {seed}: the client closed the {which} connection "
                            f"({conn.closed}) after {len(sent)} frames; the last: {sent[-5:]!r}"
                        )
                    if rng.random() < 0.05:
                        burst = audio_flood(rng.randint(1, 300))
                        await h.server.send(media.conn, burst, batch=50)
                    await anyio.sleep(0.002 if i % 10 == 0 else 0)
                stop.set()
                # Answer every command again, late: what the client waits for resolves now, and
                # the rest are responses to answered or timed-out commands.
                answered = 0
                while not idle.is_set():
                    late = [Frame("response-late", ok_response(c)) for c in media.command_ids]
                    await h.server.send(media.conn, late[answered:], batch=20)
                    answered = len(late)
                    await anyio.sleep(0.01)
        assert set(outcomes) <= ALLOWED_OUTCOMES, f"seed {seed}: {outcomes}"
        # Both connections survived: a well-formed answer to a real command resolves it...
        media.responder = None
        media.drop_pending_commands()
        assert call.is_active, f"seed {seed}: call ended ({call.termination_reason})"
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.spy)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True, result={"seed": seed})
        # ...and a well-formed offer is delivered, on the same control connection.
        second, _ = await h.call_on(control)
        assert h.client.reconnects == 0, f"seed {seed}"
        assert h.server.handshakes.count(f"/media/{call.call_id}") == 1, f"seed {seed}"
        assert h.terminated[call.call_id] == [], f"seed {seed}"
        # Finally something fatal: the call ends exactly once, and the client still goes on.
        fatal = rng.choice([*fatal_media_frames(rng), Frame("call.terminated", "")])
        if fatal.kind == "call.terminated":
            await media.terminate("callee_hangup")
            expected = "callee_hangup"
        else:
            await h.server.send(media.conn, [fatal])
            expected = "media_lost"
        assert await h.wait_terminations(call.call_id) == [expected], f"seed {seed}: {fatal!r}"
        assert second.is_active, f"seed {seed}"
    hostile = sum(SENT.values()) - sent_before
    assert hostile >= FRAMES_PER_SEED, f"seed {seed}: only {hostile} hostile frames sent"
    RANDOM_SENT[sniffio.current_async_library(), seed] = hostile
    print(f"seed {seed}: {hostile} hostile frames, client outcomes {dict(outcomes)}")


async def test_audio_payload_bound_is_what_the_codec_names() -> None:
    """The bounds the barrage aims at, for the record: a payload at MAX_AUDIO_PAYLOAD_BYTES is
    delivered, one sample more is dropped and counted, and neither ends the call."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        at = b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES)
        over = b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 2)
        await h.server.send(
            media.conn, [Frame("audio-at-bound", at), Frame("audio-over-bound", over)]
        )
        await h.server.send(media.conn, [Frame("audio-valid", b"\x00" + bytes(960))])
        await wait_until(lambda: call.stats.frames_received >= 2)
        assert call.stats.protocol_errors == 1
        assert call.stats.bytes_received == MAX_AUDIO_PAYLOAD_BYTES + 960
        assert call.is_active
        # Text past the codec bound is refused the same way, not fatal.
        await h.server.send(
            media.conn, [Frame("text-over-bound", message("x", {"p": "a" * 70_000}))]
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.answer)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True)
        assert call.state is CallState.ANSWERED
        assert call.stats.protocol_errors == 2


# --- a server that starves the client's writes ----------------------------------------------------


async def test_tiny_audio_frames_granted_by_the_server_do_not_freeze_the_client() -> None:
    """The codec accepts ``prefer_audio_frame_bytes`` down to 2; the client must not then cut four
    seconds of audio into 96,000 frames in one go, freezing every task of the process."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        grant = {"requested_bytes": 1 << 20, "prefer_audio_frame_bytes": 2, "channelId": 0}
        await h.server.send(
            media.conn, [Frame("buffer_request-tiny-frames", message("buffer_request", grant))]
        )
        longest = 0.0

        async def ticker() -> None:
            nonlocal longest
            last = anyio.current_time()
            while True:
                await anyio.sleep(0.005)
                now = anyio.current_time()
                longest, last = max(longest, now - last), now

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0.05)
            await call.send_audio(bytes(4 * 48_000))  # four seconds at 24 kHz
            await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
        assert longest < 0.2, f"the event loop froze for {longest:.2f} s"


async def test_a_command_honours_its_timeout_when_the_server_stops_reading() -> None:
    """The server grants credit and stops reading: the client's writes fill the socket. A command
    must still come back within its timeout (WRITE_TIMEOUT is 10 s; command_timeout is 0.5 s)."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.pause_reading()
        grant = {"requested_bytes": 16 << 20, "prefer_audio_frame_bytes": 960, "channelId": 0}
        await h.server.send(
            media.conn, [Frame("buffer_request", message("buffer_request", grant))] * 8
        )
        with anyio.fail_after(WAIT):
            stalled_since = anyio.current_time()
            last = -1
            while anyio.current_time() - stalled_since < 0.2:  # nothing sent for 200 ms
                if call.get_send_audio_buffer_size() == 0:
                    await call.send_audio(bytes(480_000))
                if call.stats.bytes_sent != last:
                    last, stalled_since = call.stats.bytes_sent, anyio.current_time()
                await anyio.sleep(0.01)
        started = anyio.current_time()
        with anyio.move_on_after(COMMAND_TIMEOUT + 1.0) as scope:
            outcome = await command_outcome(call.whisper(), WAIT * 2)
        waited = anyio.current_time() - started
        media.resume_reading()
        assert not scope.cancelled_caught, (
            f"whisper() with a {COMMAND_TIMEOUT} s timeout still blocked after {waited:.1f} s "
            f"(the client's writes stalled after {call.stats.bytes_sent} bytes)"
        )
        assert outcome in {"WSSCallCommandTimeoutError", "WSSCallClosedError"}


async def test_leaving_the_client_right_after_entering_is_prompt() -> None:
    """Found here, on a well-behaved server: on trio, leaving ``async with`` at once took the
    whole close timeout (2 s) about half of the time."""
    async with open_hostile_server() as server:
        for attempt in range(20):
            async with TelcoflowClient(make_config(server)) as client:
                assert client.connected
                started = anyio.current_time()
            took = anyio.current_time() - started
            assert took < 1.0, f"attempt {attempt}: leaving took {took:.2f} s"
        assert sdk_tasks() == []
