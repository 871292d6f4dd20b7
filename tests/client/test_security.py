"""Secrets stay secret (logs, reprs, errors) and media tokens are single-use, bound and expiring."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import attrs
import pytest

import telcoflow.sandbox._switchboard as switchboard
from telcoflow import (
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSAuthenticationError,
    WSSError,
    events,
)
from telcoflow._core import (
    CallIn,
    ControlProtocol,
    RequestCompleted,
    Role,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
)
from telcoflow._net import HandshakeRejected, WebSocketConnection, connect_websocket
from telcoflow.audio import tone
from telcoflow.sandbox import CalleeSpec, Sandbox

from ..helpers import WAIT, CallInbox

pytestmark = pytest.mark.anyio


class Secrets:
    """Every secret a run handled, to search for afterwards."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: str) -> None:
        self.values.append(value)

    def found_in(self, text: str) -> list[str]:
        return [s for s in self.values if s and s in text]


@pytest.fixture
def recorded_tokens(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    """Records every media token the sandbox mints."""
    minted = Secrets()
    real = secrets.token_urlsafe

    def token_urlsafe(n: int | None = None) -> str:
        token = real(n)
        minted.add(token)
        return token

    monkeypatch.setattr(f"{switchboard.__name__}.secrets.token_urlsafe", token_urlsafe)
    return minted


async def test_no_secret_in_logs_reprs_or_errors_at_debug(
    recorded_tokens: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, every logger
    seen = Secrets()
    texts: list[str] = []
    async with Sandbox(tls=True) as sb:
        assert sb.client_key_path is not None
        key_pem = await anyio.Path(sb.client_key_path).read_text()
        # the key's base64 body, line by line: no part of it may leak
        for line in key_pem.splitlines():
            if not line.startswith("-----"):
                seen.add(line)
        seen.add(sb.api_key)
        bad_key = "definitely-wrong-key-" + secrets.token_hex(8)
        seen.add(bad_key)

        api = TelcoflowClientConfig.sandbox(
            api_key=sb.api_key,
            connector_uuid=sb.connector_uuid,
            base_url=sb.base_url,
            ca_path=sb.ca_path,
        )
        mtls = TelcoflowClientConfig.production(
            cert_path=sb.client_cert_path or "",
            key_path=sb.client_key_path,
            ca_path=sb.ca_path,
            base_url=sb.base_url,
        )
        texts += [repr(api), str(api), repr(mtls)]
        for config in (api, mtls):
            async with TelcoflowClient(config) as client:
                inbox = CallInbox(client)
                sim = await sb.create_call(callee=CalleeSpec(answer_after_s=0.1))
                call = await inbox.next()
                texts += [repr(client), repr(call), repr(call.stats)]
                await call.answer()
                await call.send_audio(tone(660, 0.1, 24000))
                await call.connect(ring_time_seconds=5)
                with anyio.fail_after(WAIT):
                    await sim.wait_for(lambda c: c.stats.agent_bytes_received > 0)
                await call.close()
                with pytest.raises(WSSError) as closed:
                    await call.answer()
                texts.append(str(closed.value))
                inbox.close()

        refused = TelcoflowClientConfig.sandbox(
            api_key=bad_key,
            connector_uuid=sb.connector_uuid,
            base_url=sb.base_url,
            ca_path=sb.ca_path,
        )
        texts.append(repr(refused))
        with pytest.raises(WSSAuthenticationError) as auth:
            async with TelcoflowClient(refused):
                pass
        texts += [str(auth.value), repr(auth.value)]

    seen.values += recorded_tokens.values
    assert len(recorded_tokens.values) >= 2  # one media token per call at least
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    texts.append(caplog.text)
    leaks = {secret for text in texts for secret in seen.found_in(text)}
    assert not leaks, f"secrets leaked: {sorted(s[:6] + '...' for s in leaks)}"
    assert any("call.answer" in r.getMessage() for r in caplog.records)  # DEBUG really was on


async def test_call_in_repr_hides_the_media_token() -> None:
    offer = CallIn("s1", "c1", "ws://x/v1/agent/media/c1", "tok-SECRET", "org", "+1", "+2")
    assert "tok-SECRET" not in repr(offer)


# --- media tokens --------------------------------------------------------------------------------


async def _control(sandbox: Sandbox) -> WebSocketConnection:
    conn = await connect_websocket(
        f"{sandbox.base_url}/v1/agent/session-manager",
        headers=[("x-api-key", sandbox.api_key), ("x-connector-uuid", sandbox.connector_uuid)],
    )
    return conn


Offers = Callable[[], Awaitable[CallIn]]


async def _raw_offers(sandbox: Sandbox) -> AsyncIterator[Offers]:
    conn = await _control(sandbox)
    proto = ControlProtocol(Role.CLIENT)
    with anyio.fail_after(WAIT):
        await conn.send(proto.send(Setup()))
        proto.receive(await conn.receive())

    async def next_of(kind: type[object]) -> object:
        while not isinstance(msg := proto.receive(await conn.receive()), kind):
            pass
        return msg

    async def offer() -> CallIn:
        """Place a call, claim it and ready it by hand: its ``call.in``."""
        await sandbox.create_call()
        with anyio.fail_after(WAIT):
            note = await next_of(SessionNotify)
            assert isinstance(note, SessionNotify)
            await conn.send(proto.send(SessionOpen(note.session_id, proto.new_request_id())))
            done = await next_of(RequestCompleted)
            assert isinstance(done, RequestCompleted)
            assert done.response.ok
            await conn.send(proto.send(SessionReady(note.session_id)))
            call_in = await next_of(CallIn)
        assert isinstance(call_in, CallIn)
        return call_in

    try:
        yield offer
    finally:
        await conn.aclose()


@pytest.fixture
async def offers(sandbox: Sandbox) -> AsyncIterator[Offers]:
    """A raw control connection (no SDK): yields a function placing a call and returning its
    ``call.in``, to use its media token by hand."""
    async for offer in _raw_offers(sandbox):
        yield offer


async def _media(offer: CallIn, url: str | None = None, token: str | None = None) -> None:
    token = offer.token if token is None else token
    headers = [("authorization", f"Bearer {token}")] if token else []
    conn = await connect_websocket(url or offer.url, headers=headers)
    await conn.aclose()


async def test_media_token_is_single_use(offers: Offers) -> None:
    offer = await offers()
    await _media(offer)
    with pytest.raises(HandshakeRejected) as info:
        await _media(offer)
    assert info.value.status_code == 401


async def test_media_token_is_bound_to_its_call_and_not_used_up_elsewhere(
    offers: Offers,
) -> None:
    first = await offers()
    second = await offers()
    with pytest.raises(HandshakeRejected) as info:
        await _media(first, url=second.url)
    assert info.value.status_code == 401
    await _media(first)  # the refused attempt did not use it up: its own call takes it


@pytest.mark.parametrize("token", ["", "guess", "Bearer"])
async def test_missing_or_wrong_media_token_is_refused(offers: Offers, token: str) -> None:
    offer = await offers()
    with pytest.raises(HandshakeRejected) as info:
        await _media(offer, token=token)
    assert info.value.status_code == 401
    assert "token" in info.value.body


async def test_media_token_expires() -> None:
    async with Sandbox(token_ttl=0.0) as sb:  # expired the moment it is minted
        async for offers in _raw_offers(sb):
            offer = await offers()
            with pytest.raises(HandshakeRejected) as info:
                await _media(offer)
            assert info.value.status_code == 401


async def test_a_media_token_outlives_the_claim_timeouts() -> None:
    """PROTOCOL.md: a token is valid at least 60 s from its call.in, until first used."""
    async with Sandbox() as sb:
        assert sb.token_ttl >= 60.0


async def test_tls_is_verified_by_default(
    make_config: Callable[..., TelcoflowClientConfig],
) -> None:
    async with Sandbox(tls=True) as sb:
        config = TelcoflowClientConfig.sandbox(
            api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
        )
        with pytest.raises(WSSError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            async with TelcoflowClient(config):
                pass


async def test_call_terminated_event_names_no_secret(
    sandbox: Sandbox, inbox: CallInbox, recorded_tokens: Secrets
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    reasons: list[str] = []
    done = anyio.Event()
    call.on(events.CALL_TERMINATED, reasons.append)
    call.on(events.CALL_TERMINATED, done.set)
    await call.answer()
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        await done.wait()
    assert reasons == ["caller_hangup"]
    assert not recorded_tokens.found_in(repr(call) + call.call_id + str(call.termination_reason))


async def test_connect_timeout_equal_to_the_ring_time_yields_the_ring_outcome(
    sandbox: Sandbox, offers: Offers
) -> None:
    """The official SDK sends connect's timeout_ms equal to the ring time: the callee's
    outcome (here: no answer) must win over TIMEOUT."""
    from telcoflow._core import Command, CommandCompleted, MediaProtocol

    offer = await offers()
    sim = sandbox.get_call(offer.call_id)
    assert sim is not None
    conn = await connect_websocket(offer.url, headers=[("authorization", f"Bearer {offer.token}")])
    proto = MediaProtocol(Role.CLIENT)
    sim.spec = attrs.evolve(sim.spec, callee=CalleeSpec(answer=False))
    try:
        with anyio.fail_after(WAIT):
            for command, timeout_ms, data in (
                (Command.ANSWER, 5000, None),
                (Command.CONNECT, 1000, {"ringTimeSeconds": 1}),
            ):
                await conn.send(proto.command(command, timeout_ms, data)[1])
                while not isinstance(
                    event := proto.receive(await conn.receive()), CommandCompleted
                ):
                    pass
            assert isinstance(event, CommandCompleted)  # what the loop waited for: for mypy
            assert event.command is Command.CONNECT
            assert event.response.error_code == "CALL_UNANSWERED"
    finally:
        await conn.aclose()
