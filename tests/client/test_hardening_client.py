"""The client under a misbehaving server (hardening issue): floods, bounded memory, young
connections, downgrades, offer floods, the connect timeout."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from telcoflow import TelcoflowClient, TelcoflowClientConfig, WSSConnectionError
from telcoflow.sandbox import Sandbox

from ..helpers import WAIT, CallInbox, serving
from ..hosted_server import HostedServer

pytestmark = pytest.mark.anyio

MakeConfig = Callable[..., TelcoflowClientConfig]


@pytest.fixture
async def hosted() -> AsyncIterator[HostedServer]:
    async with HostedServer(api_key="k", connector_uuid="c") as server:
        yield server


def hosted_config(server: HostedServer, **options: Any) -> TelcoflowClientConfig:
    return TelcoflowClientConfig.sandbox(
        api_key="k", connector_uuid="c", base_url=server.base_url, **options
    )


# --- a flood on one call starves no other ---------------------------------------------------------


async def test_a_flood_of_tiny_frames_on_one_call_does_not_starve_the_others(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    await sandbox.create_call()
    healthy = await inbox.next()
    flooded_sim = await sandbox.create_call()
    flooded = await inbox.next()
    await healthy.answer()
    await flooded.answer()
    start, began = healthy.stats.frames_received, anyio.current_time()
    with anyio.fail_after(60):
        await sandbox.inject_fault(
            {
                "kind": "flood",
                "target": "media",
                "call_id": flooded_sim.call_id,
                "payload": {"hex": "00"},
                "count": 200_000,
            }
        )
        await flooded_sim.wait_for(lambda c: flooded.stats.protocol_errors >= 200_000)
    took = anyio.current_time() - began
    heard = healthy.stats.frames_received - start
    assert heard >= 0.5 * took / 0.02, (heard, took)
    assert flooded.is_active, "bad frames are counted and skipped, the call goes on"


async def test_inbound_audio_is_bounded_in_bytes(sandbox: Sandbox, make_config: MakeConfig) -> None:
    async with serving(make_config(audio_queue_chunks=50)) as (_, inbox):
        sim = await sandbox.create_call()
        call = await inbox.next()
        await call.answer()
        big = "00" + "11" * 64_000  # channel 0 and 64,000 bytes of audio, a frame
        await sandbox.inject_fault(
            {
                "kind": "flood",
                "target": "media",
                "call_id": sim.call_id,
                "payload": {"hex": big},
                "count": 200,
            }
        )
        with anyio.fail_after(WAIT):
            await sim.wait_for(lambda c: call.stats.bytes_received >= 200 * 64_000)
        bound = 50 * 960  # 50 chunks of 20 ms at 24 kHz
        assert call.inbound_buffered_bytes <= bound + 64_000  # at most one chunk over
        assert call.stats.dropped_inbound_bytes >= 200 * 64_000 - bound - 64_000


# --- backoff: a connection that dies young is a failure ----------------------------------------


async def test_a_server_that_drops_every_connection_at_once_exhausts_max_attempts(
    hosted: HostedServer,
) -> None:
    config = hosted_config(
        hosted, reconnect={"initial_delay": 0.01, "max_delay": 0.02, "max_attempts": 2}
    )

    # Each connection is set up, then dropped as soon as the client shows it is (it claims the
    # call notified right after setup.done).
    hosted.resume_on_setup = [hosted.new_session(hold_open=True)]

    async def drop_each_one() -> None:
        dropped = 0
        while True:
            conn = await hosted.control(dropped)
            await hosted.wait_for(lambda conn=conn: conn.messages("session.open"))  # type: ignore[misc]
            await conn.drop()
            dropped += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(drop_each_one)
        with anyio.fail_after(WAIT), pytest.raises(WSSConnectionError, match="gave up after 2"):
            async with TelcoflowClient(config) as client:
                await client.run_forever()
        tg.cancel_scope.cancel()
    assert len(hosted.upgrades()) == 3  # the first connection and two attempts, no more


# --- no downgrade of the media's encryption -------------------------------------------------------


async def test_a_plain_media_url_under_a_tls_control_connection_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused_event = anyio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "plain ws://" in record.getMessage():
                refused_event.set()

    seen = Seen()
    logging.getLogger("telcoflow_sdk.control_connection").addHandler(seen)
    try:
        await _refuses_plain_media(refused_event, caplog)
    finally:
        logging.getLogger("telcoflow_sdk.control_connection").removeHandler(seen)


async def _refuses_plain_media(
    refused_event: anyio.Event, caplog: pytest.LogCaptureFixture
) -> None:
    async with Sandbox(tls=True, media_base_url="ws://127.0.0.1:9") as sb:
        config = TelcoflowClientConfig.sandbox(
            api_key=sb.api_key,
            connector_uuid=sb.connector_uuid,
            base_url=sb.base_url,
            ca_path=sb.ca_path,
        )
        async with serving(config) as (client, _):
            await sb.create_call()
            with anyio.fail_after(WAIT):
                await refused_event.wait()
            assert client.calls == []
            refused = [r for r in caplog.records if "plain ws://" in r.getMessage()]
            assert refused[0].levelno == logging.ERROR
            assert "allow_insecure_media" in refused[0].getMessage()
            assert not [u for u in sb.upgrades if u.path.startswith("/v1/agent/media/")]


# --- an offer flood ------------------------------------------------------------------------------


async def test_good_calls_get_through_a_flood_of_calls_to_an_unreachable_media_host(
    hosted: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    silent_port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:  # reads the upgrade, answers nothing
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        config = hosted_config(hosted, connect_timeout=2.0)
        async with serving(config) as (_, inbox):
            conn = await hosted.control()
            bad = [hosted.new_session(on_ready="nothing") for _ in range(300)]
            for session in bad:
                await hosted.notify(session)
            await hosted.wait_for(lambda: all(s.bound for s in bad))
            for session in bad:
                url = f"ws://127.0.0.1:{silent_port}/v1/agent/media/{session.call_id}"
                await conn.call_in(session, url=url)
            good = hosted.new_session()
            await hosted.notify(good)
            with anyio.fail_after(1.5):  # well before the bad ones' connect timeout
                call = await inbox.next()
            assert call.call_id == good.call_id
        tg.cancel_scope.cancel()
    media_warnings = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "cannot open its media" in r.getMessage()
    ]
    assert len(media_warnings) <= 10 + 300 // 100, len(media_warnings)


# --- the connect timeout bounds the whole connect -------------------------------------------------


async def test_the_connect_timeout_bounds_the_upgrade_and_the_setup(sandbox: Sandbox) -> None:
    await sandbox.inject_fault({"kind": "hang_setup", "seconds": 60})
    config = TelcoflowClientConfig.sandbox(
        api_key=sandbox.api_key,
        connector_uuid=sandbox.connector_uuid,
        base_url=sandbox.base_url,
        connect_timeout=0.5,
    )
    with (
        anyio.fail_after(3),
        pytest.raises(WSSConnectionError, match=r"within the connect timeout \(0.5 s\)"),
    ):
        async with TelcoflowClient(config):
            pass


async def test_the_connect_timeout_bounds_an_upgrade_never_answered(hosted: HostedServer) -> None:
    hosted.control_gate = anyio.Event()  # upgrades wait, unanswered
    with anyio.fail_after(3), pytest.raises(WSSConnectionError, match="not connected within"):
        async with TelcoflowClient(hosted_config(hosted, connect_timeout=0.5)):
            pass
    hosted.control_gate.set()


# --- bounded work per turn, measured in turns, not seconds ----------------------------------------


class _OneRead(anyio.abc.ByteStream):
    """A stream whose first read returns everything at once (a flood already buffered)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._data is None:
            await anyio.sleep_forever()
        data, self._data = self._data, None
        assert data is not None
        return data

    async def send(self, item: bytes) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def _turns_while(consume: Callable[[], Any]) -> int:
    """How many times another task got to run while ``consume()`` ran."""
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            await anyio.lowlevel.checkpoint()
            turns += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await anyio.lowlevel.checkpoint()
        turns = 0
        await consume()
        done = True
    return turns


@pytest.mark.parametrize("kind", ["bad audio", "good audio"])
async def test_a_reader_fed_a_flood_at_once_lets_others_run(kind: str) -> None:
    """A flood of frames all read in one go (tiny bad ones, or audio) must not keep the
    reader from letting the event loop run the other calls: counted in turns, not seconds."""
    from wsproto import ConnectionType, WSConnection

    from telcoflow._core import AudioFrame, MediaProtocol, Role
    from telcoflow._net import WebSocketConnection, open_link
    from telcoflow._net._frames import OP_BINARY, encode_data_frame

    n = 20_000
    payload = b"\x00" if kind == "bad audio" else b"\x00" + bytes(960)
    marker = encode_data_frame(OP_BINARY, b"\x00" + bytes(2), masked=False)  # a last good one
    flood = encode_data_frame(OP_BINARY, payload, masked=False) * n + marker
    conn = WebSocketConnection(
        _OneRead(flood), WSConnection(ConnectionType.CLIENT), name="flooded", leftover=b""
    )
    proto = MediaProtocol(Role.CLIENT)
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async with open_link(conn, proto.receive, logger=logging.getLogger("test")) as link:
            async for frame in link:
                seen += 1
                assert isinstance(frame, AudioFrame)  # a flood of binary frames: audio only
                if len(frame.pcm) == 2:  # the marker: the whole flood is in
                    break
            seen += link.bad_frames - 1

    turns = await _turns_while(consume)
    assert seen == n
    # At least once per 100 frames (it does every MESSAGES_PER_TURN + 1).
    assert turns >= n // 100, f"the reader let others run {turns} times in {n} frames"
