"""TLS and mutual TLS against a real ``Sandbox(tls=True)``: server verification with a given CA,
production-mode (client certificate) authentication, and refusals of what must not connect."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme

from telcoflow import (
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSAuthenticationError,
    WSSConnectionError,
    WSSError,
)
from telcoflow.sandbox import Sandbox, tone_level

from .conftest import WAIT, CallInbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tls_sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(tls=True) as sb:
        yield sb


async def _take_a_call(sb: Sandbox, config: TelcoflowClientConfig) -> None:
    """A call end to end: offered, answered, echoed, closed; the caller heard the echo."""
    async with TelcoflowClient(config) as client:
        inbox = CallInbox(client)
        try:
            sim = await sb.create_call()
            call = await inbox.next()
            assert call.call_id == sim.call_id
            [session] = sb.control_sessions()
            assert session.media_base.startswith("wss://")  # media is offered over TLS too
            await call.answer()
            assert sim.state is CallState.ANSWERED
            chunks = 0
            with anyio.fail_after(WAIT):
                async for chunk in call.audio_stream():
                    await call.send_audio(chunk)
                    chunks += 1
                    if chunks == 25:
                        break
            await call.close()
            with anyio.fail_after(WAIT):
                assert await sim.wait_ended() == "agent_close"
            assert sim.stats.agent_bytes_received > 0
            assert tone_level(sim.recording("caller"), 24000, 440) > 0.02  # its voice, echoed
        finally:
            inbox.close()


async def test_api_key_client_over_tls_takes_a_call(tls_sandbox: Sandbox) -> None:
    sb = tls_sandbox
    assert sb.base_url.startswith("wss://")
    assert sb.ca_path is not None
    config = TelcoflowClientConfig.sandbox(
        api_key=sb.api_key,
        connector_uuid=sb.connector_uuid,
        base_url=sb.base_url,
        ca_path=sb.ca_path,
    )
    await _take_a_call(sb, config)


async def test_self_signed_server_is_refused_without_its_ca(tls_sandbox: Sandbox) -> None:
    sb = tls_sandbox
    config = TelcoflowClientConfig.sandbox(
        api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
    )
    with anyio.fail_after(WAIT), pytest.raises(WSSConnectionError) as info:
        async with TelcoflowClient(config):
            pytest.fail("connected to a server whose certificate cannot be verified")
    assert "certificate" in str(info.value).lower()
    assert sb.control_sessions() == []


async def test_production_mode_connects_with_mutual_tls_and_takes_a_call(
    tls_sandbox: Sandbox,
) -> None:
    sb = tls_sandbox
    assert sb.client_cert_path is not None
    assert sb.client_key_path is not None
    config = TelcoflowClientConfig.production(
        cert_path=sb.client_cert_path,
        key_path=sb.client_key_path,
        ca_path=sb.ca_path,
        base_url=sb.base_url,
    )
    assert config.api_key is None  # the certificate alone identifies the connector
    await _take_a_call(sb, config)


async def test_production_mode_with_a_certificate_from_another_ca_is_refused(
    tls_sandbox: Sandbox, tmp_path: Path
) -> None:
    sb = tls_sandbox
    # A certificate naming the right connector, issued by a CA the sandbox does not trust.
    rogue = trustme.CA(organization_name="not the sandbox")
    cert = rogue.issue_cert(
        f"{sb.connector_uuid}.connectors.sandbox.invalid", common_name=sb.connector_uuid
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    config = TelcoflowClientConfig.production(
        cert_path=str(cert_path),
        key_path=str(key_path),
        ca_path=sb.ca_path,
        base_url=sb.base_url,
        reconnect={"initial_delay": 0.01, "max_delay": 0.02},
    )
    with anyio.fail_after(WAIT), pytest.raises(WSSError) as info:
        async with TelcoflowClient(config):
            pytest.fail("connected with a client certificate from an untrusted CA")
    assert isinstance(info.value, (WSSConnectionError, WSSAuthenticationError))
    assert sb.control_sessions() == []


async def test_sandbox_http_api_is_served_over_https(tls_sandbox: Sandbox) -> None:
    sb = tls_sandbox
    assert sb.http_url.startswith("https://")
    assert sb.ca_path is not None
    verify = ssl.create_default_context(cafile=sb.ca_path)
    async with httpx.AsyncClient(base_url=sb.http_url, verify=verify) as http:
        with anyio.fail_after(WAIT):
            response = await http.get("/sandbox/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
