"""The sandbox as a server others depend on (hardening issue): bad voices, bad bodies, failures
inside one call, work kept off the event loop."""

from __future__ import annotations

import base64
import io
import struct
import threading
import wave
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx
import pytest

from telcoflow import TelcoflowClient, TelcoflowClientConfig
from telcoflow.audio import tone
from telcoflow.sandbox import CalleeSpec, CallSpec, Limits, Retention, Sandbox, Voice

from ..helpers import WAIT, CallInbox

pytestmark = pytest.mark.anyio


def wav_bytes(rate: int, seconds: float = 0.5, header_rate: int | None = None) -> bytes:
    """A mono PCM16 WAV at ``rate``; ``header_rate`` rewrites the rate its header declares."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(440, seconds, rate))
    data = bytearray(buf.getvalue())
    if header_rate is not None:
        struct.pack_into("<I", data, 24, header_rate)  # fmt chunk: sample rate
        struct.pack_into("<I", data, 28, header_rate * 2)  # and byte rate
    return bytes(data)


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.http_url, timeout=WAIT) as client:
        yield client


@pytest.mark.parametrize("declared", [0, 1, 3999, 192_001])
async def test_a_wav_with_an_absurd_rate_is_refused_when_placed(
    sandbox: Sandbox, http: httpx.AsyncClient, declared: int
) -> None:
    bad = base64.b64encode(wav_bytes(8000, header_rate=declared)).decode()
    for body in ({"caller": {"wav_base64": bad}}, {"callee": {"wav_base64": bad}}):
        response = await http.post("/sandbox/calls", json=body)
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert "wav_base64" in message
        assert f"{declared} Hz" in message
    assert sandbox.calls == [], "nothing was created: no zombie call"
    with pytest.raises(ValueError, match=r"caller\.wav"):
        await sandbox.create_call(CallSpec(caller=Voice(wav=wav_bytes(8000, header_rate=0))))
    with pytest.raises(ValueError, match="sample rate"):
        Voice.from_wav(wav_bytes(8000, header_rate=0))
    assert sandbox.calls == []


async def test_a_wav_too_long_is_refused(sandbox: Sandbox) -> None:
    # 20 s of audio whose header says 8000 Hz would be fine; one that declares 4000 Hz and holds
    # 11 minutes is refused before anything converts it.
    long = wav_bytes(4000, seconds=601)
    with pytest.raises(ValueError, match="at most 600 s"):
        Voice.from_wav(long)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"caller_hangup_after_s": 1' + b"0" * 5000 + b"}", "JSON"),
        (b'{"caller_hangup_after_s": 1e400}', "caller_hangup_after_s"),
        (b'{"caller_hangup_after_s": ' + b"9" * 400 + b"}", "caller_hangup_after_s"),
        (b'{"caller": {"tone_hz": ' + b"9" * 400 + b"}}", "tone_hz"),
        (b'{"caller": {"silence": "yes"}}', "silence"),
        (b'{"caller": {"silence": 1}}', "silence"),
        (b'{"missed_after_s": -1}', "missed_after_s"),
    ],
)
async def test_bad_bodies_get_400_naming_the_problem(
    sandbox: Sandbox, http: httpx.AsyncClient, body: bytes, words: str
) -> None:
    response = await http.post("/sandbox/calls", content=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert sandbox.calls == []


class _BrokenVoice(Voice):
    """A voice whose conversion fails, standing in for any bug inside one call's task."""

    def convert(self, sample_rate: int) -> bytes:
        raise RuntimeError("conversion exploded")


class _ThreadedVoice(Voice):
    """Records which thread converted it."""

    def convert(self, sample_rate: int) -> bytes:
        threads.append(threading.current_thread())
        return super().convert(sample_rate)


threads: list[threading.Thread] = []


async def test_a_failure_inside_one_call_ends_that_call_only(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    healthy = await sandbox.create_call()
    first = await inbox.next()
    await first.answer()
    # Its voice is converted when an agent takes it: the failure comes then.
    broken = await sandbox.create_call(CallSpec(caller=_BrokenVoice(wav=wav_bytes(8000))))
    with anyio.fail_after(WAIT):
        assert await broken.wait_ended() == "server_error"
    assert healthy.state.value == "ANSWERED", "the other call goes on"
    assert first.is_active
    marker = await sandbox.create_call()  # and the sandbox still serves
    with anyio.fail_after(WAIT):
        while (call := await inbox.next()).call_id != marker.call_id:
            assert call.call_id == broken.call_id  # taken before it failed: it ended too
            assert await call.wait_terminated() == "server_error"


async def test_wav_voices_are_converted_off_the_event_loop(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    threads.clear()
    sim = await sandbox.create_call(CallSpec(caller=_ThreadedVoice(wav=wav_bytes(8000, 1.0))))
    call = await inbox.next()
    await call.answer()
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: bool(threads))
    assert threads[0] is not threading.main_thread()


def _wav_of(voice: Voice) -> bytes | None:
    """``voice.wav`` read afresh: after ``assert voice.wav is not None`` mypy keeps the narrowed
    type across the ``await`` that drops it."""
    return voice.wav


async def test_an_ended_call_lets_go_of_its_wav_voices(sandbox: Sandbox, inbox: CallInbox) -> None:
    """Ended calls are kept for the HTTP API (up to a thousand): one that kept a five-minute
    WAV voice and its conversion held 18 MB for good."""
    voice = Voice.from_wav(wav_bytes(8000, 2.0))
    sim = await sandbox.create_call(
        CallSpec(caller=voice, callee=CalleeSpec(voice=Voice.from_wav(wav_bytes(16000, 1.0))))
    )
    call = await inbox.next()
    await call.answer()
    assert sim.spec.caller.wav is not None, "an answered call still speaks its voice"
    await sim.hangup_caller()
    assert _wav_of(sim.spec.caller) is None
    assert sim.spec.callee.voice.wav is None
    assert sim.to_json()["ended_reason"] == "caller_hangup"  # the record itself is kept


async def test_a_large_call_body_is_parsed_off_the_event_loop(
    sandbox: Sandbox, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAV voice of minutes is megabytes of base64: JSON, base64 and the header took 20 ms
    on the loop, felt by every call's 20 ms media tick."""
    seen: list[threading.Thread] = []
    parse = CallSpec.from_json.__func__  # type: ignore[attr-defined]

    def recording_parse(cls: type[CallSpec], body: object) -> CallSpec:
        seen.append(threading.current_thread())
        return parse(cls, body)  # type: ignore[no-any-return]

    monkeypatch.setattr(CallSpec, "from_json", classmethod(recording_parse))
    small = await http.post("/sandbox/calls", json={})
    wav = base64.b64encode(wav_bytes(8000, 10.0)).decode()
    large = await http.post("/sandbox/calls", json={"caller": {"wav_base64": wav}})
    assert (small.status_code, large.status_code) == (201, 201)
    assert seen[0] is threading.main_thread(), "a small body is parsed where it is"
    assert seen[1] is not threading.main_thread()


# --- the front door: timeouts, limits, HTTP hygiene -----------------------------------------------


async def _raw(sandbox: Sandbox) -> anyio.abc.SocketStream:
    return await anyio.connect_tcp(sandbox.host, sandbox.port)


async def _read_all(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the sandbox sends until it closes the connection."""
    data = bytearray()
    with anyio.fail_after(WAIT):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return bytes(data)


async def test_an_idle_or_slow_connection_is_closed_after_the_head_timeout() -> None:
    async with Sandbox(limits=Limits(head_timeout=0.3)) as sb:
        idle, slow = await _raw(sb), await _raw(sb)
        async with idle, slow:
            await slow.send(b"GET /sandbox/hea")  # and then nothing more: slowloris
            assert await _read_all(idle) == b""
            assert await _read_all(slow) == b""


async def test_a_body_that_never_completes_gets_408() -> None:
    async with Sandbox(limits=Limits(body_timeout=0.3)) as sb:
        stream = await _raw(sb)
        async with stream:
            await stream.send(
                b"POST /sandbox/calls HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
            )
            answer = await _read_all(stream)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert sb.calls == []


async def test_an_oversized_body_gets_413_without_being_read() -> None:
    async with Sandbox(limits=Limits(max_body_bytes=1000)) as sb:
        stream = await _raw(sb)
        async with stream:
            head = b"POST /sandbox/calls HTTP/1.1\r\nhost: x\r\ncontent-length: 30000000\r\n\r\n"
            await stream.send(head)
            answer = await _read_all(stream)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"larger than 1000 bytes" in answer
        # A chunked body that grows past the limit is refused too.
        stream = await _raw(sb)
        async with stream:
            await stream.send(
                b"POST /sandbox/calls HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"800\r\n"
                + b"x" * 2048
                + b"\r\n"
            )
            assert (await _read_all(stream)).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /sandbox/health HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
    ],
)
async def test_a_malformed_request_gets_400(sandbox: Sandbox, request_bytes: bytes) -> None:
    stream = await _raw(sandbox)
    async with stream:
        await stream.send(request_bytes)
        answer = await _read_all(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]


@pytest.mark.parametrize(
    ("version", "key"),
    [
        (b"1.0", base64.b64encode(b"0123456789abcdef")),
        (b"1.1", b"not base64!"),
        (b"1.1", base64.b64encode(b"short")),
    ],
)
async def test_a_bad_upgrade_request_gets_400(sandbox: Sandbox, version: bytes, key: bytes) -> None:
    stream = await _raw(sandbox)
    async with stream:
        await stream.send(
            b"GET /v1/agent/session-manager HTTP/" + version + b"\r\nhost: x\r\n"
            b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: " + key + b"\r\n"
            b"x-api-key: " + sandbox.api_key.encode() + b"\r\n"
            b"x-connector-uuid: " + sandbox.connector_uuid.encode() + b"\r\n\r\n"
        )
        answer = await _read_all(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert sandbox.control_sessions() == []


async def test_idle_connections_cannot_lock_anyone_out() -> None:
    """Past the connection limit the oldest unidentified connections are let go: a client
    and an agent still get in."""
    async with Sandbox(limits=Limits(max_connections=20)) as sb:
        idle = [await _raw(sb) for _ in range(40)]
        try:
            async with httpx.AsyncClient(base_url=sb.http_url, timeout=WAIT) as http:
                assert (await http.get("/sandbox/health")).status_code == 200
            config = TelcoflowClientConfig.sandbox(
                api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
            )
            async with TelcoflowClient(config) as client:
                assert client.connected
            closed = 0
            for stream in idle:
                with anyio.move_on_after(0.01):
                    try:
                        await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        closed += 1
            assert closed >= 20, "the oldest idle connections were closed to make room"
        finally:
            for stream in idle:
                await stream.aclose()


async def test_a_recording_is_streamed_whole(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: len(c.recording("caller")) > 300_000)
    await sim.hangup_caller()
    async with httpx.AsyncClient(base_url=sandbox.http_url, timeout=WAIT) as http:
        response = await http.get(f"/sandbox/calls/{sim.call_id}/recording/caller.wav")
    assert response.status_code == 200
    assert response.content == sim.recording_wav("caller")
    assert int(response.headers["content-length"]) == len(response.content)


# --- the admin token ------------------------------------------------------------------------------


def test_a_sandbox_reachable_by_others_needs_an_admin_token() -> None:
    with pytest.raises(ValueError, match="admin_token"):
        Sandbox("0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        Sandbox(admin_token="short")
    Sandbox("0.0.0.0", admin_token="x" * 16)  # fine (not started)


async def test_the_admin_token_guards_the_http_api() -> None:
    token = "t0ken-" + "x" * 20
    async with (
        Sandbox(admin_token=token) as sb,
        httpx.AsyncClient(base_url=sb.http_url, timeout=WAIT) as http,
    ):
        health = await http.get("/sandbox/health")
        assert health.json() == {"status": "ok"}, "liveness only: no credentials"
        refused = await http.post("/sandbox/calls", json={})
        assert refused.status_code == 401
        wrong = await http.get("/sandbox/calls", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert (await http.post("/sandbox/calls", json={}, headers=auth)).status_code == 201
        full = (await http.get("/sandbox/health", headers=auth)).json()
        assert full["connectors"][0]["api_key"] == sb.api_key


# --- memory: ringing calls, retention -------------------------------------------------------------


async def test_ringing_calls_cost_no_clock_and_keep_their_timeline(sandbox: Sandbox) -> None:
    ringing = [await sandbox.create_call() for _ in range(200)]
    assert sandbox.health()["media"]["calls_ticking"] == 0, "ringing calls do not tick"
    first = ringing[0]
    with anyio.fail_after(WAIT):
        await first.wait_for(lambda c: len(c.recording("caller")) >= 960 * 25)  # 0.5 s
    # Looking at it settled its silence on the call's timeline: 20 ms per 960 bytes at 24 kHz.
    elapsed = anyio.current_time() - first._created_mono
    assert abs(len(first.recording("caller")) / 960 * 0.02 - elapsed) < 0.2


async def test_the_retention_policy_bounds_what_ended_calls_keep() -> None:
    async with Sandbox(retention=Retention(ended_calls=3, recordings=1)) as sb:
        sims = []
        for _ in range(5):
            sim = await sb.create_call()
            await sim.hangup_caller()
            sims.append(sim)
        kept = [c.call_id for c in sb.calls]
        assert kept == [s.call_id for s in sims[-3:]]
        assert sims[-1].recording("caller") is not None
        with pytest.raises(ValueError, match="discarded"):
            sims[-2].recording("caller")
        async with httpx.AsyncClient(base_url=sb.http_url, timeout=WAIT) as http:
            gone = await http.get(f"/sandbox/calls/{sims[-2].call_id}/recording/caller.wav")
            assert gone.status_code == 410
            forgotten = await http.get(f"/sandbox/calls/{sims[0].call_id}")
            assert forgotten.status_code == 404
        assert len(sb.sessions()) == 3


async def test_expired_media_tokens_are_purged() -> None:
    async with Sandbox(token_ttl=0.05) as sb:
        config = TelcoflowClientConfig.sandbox(
            api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
        )
        await sb.inject_fault({"kind": "hang_media", "seconds": 60})
        async with TelcoflowClient(config):
            await sb.create_call()
            with anyio.fail_after(WAIT):
                await sb.wait_for(lambda: sb.held("media") == 1)  # call.in came: a token
                await sb.wait_for(lambda: sb.tokens_outstanding == 0)


# --- overload is said --------------------------------------------------------------------------


async def test_media_time_lost_to_a_stalled_sandbox_is_counted_and_said(
    sandbox: Sandbox, inbox: CallInbox, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: len(c.recording("caller")) > 960 * 10)
    time.sleep(1.6)  # noqa: ASYNC251  # the whole process stalls (an overloaded machine)
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: len(c.recording("caller")) > 960 * 30)
    await sim.hangup_caller()
    assert sim.stats.skipped_ms >= 500
    assert sandbox.health()["media"]["skipped_ms"] >= 500
    assert sim.to_json()["stats"]["skipped_ms"] == sim.stats.skipped_ms
    assert any("overloaded" in r.getMessage() for r in caplog.records)


# --- one peer cannot stall the others -------------------------------------------------------------


async def _flooding_peer(sb: Sandbox, pings: int) -> tuple[anyio.abc.SocketStream, bytes]:
    """A raw control connection (wsproto) and the bytes of ``pings`` pings to flood it with."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Ping, Request

    ws = WSConnection(ConnectionType.CLIENT)
    stream = await anyio.connect_tcp(sb.host, sb.port)
    await stream.send(
        ws.send(
            Request(
                host="x",
                target="/v1/agent/session-manager",
                extra_headers=[
                    (b"x-api-key", sb.api_key.encode()),
                    (b"x-connector-uuid", sb.connector_uuid.encode()),
                ],
            )
        )
    )
    with anyio.fail_after(WAIT):
        while True:
            ws.receive_data(await stream.receive())
            if any(isinstance(e, AcceptConnection) for e in ws.events()):
                break
    return stream, b"".join(ws.send(Ping(b"")) for _ in range(pings))


async def test_a_ping_flood_on_one_connection_does_not_stall_the_calls(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    stream, flood = await _flooding_peer(sandbox, 200_000)
    async with stream:
        got = 0
        start = call.stats.frames_received

        async def read_pongs() -> None:
            nonlocal got
            while got < len(flood) // 3:  # a pong to an empty ping is 2 bytes (unmasked)
                got += len(await stream.receive())

        with anyio.fail_after(60):
            began = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_pongs)
                await stream.send(flood)
                async for _ in call.audio_stream():
                    if got >= len(flood) // 3:
                        break
            took = anyio.current_time() - began
        heard = call.stats.frames_received - start
    # Audio kept flowing to the healthy call while the sandbox answered 200,000 pings.
    assert heard >= 0.5 * took / 0.02, (heard, took)
    assert sim.state.value == "ANSWERED"
