"""TLS and mutual TLS against a real ``Sandbox(tls=True)``: server verification with a given CA,
production-mode (client certificate) authentication, and refusals of what must not connect;
the checks of the certificate, key and CA files (telcoflow.config, telcoflow._net._tls); and at
the connection layer, a ``wss://`` WebSocket over loopback with mutual TLS, and an untrusted
server refused."""

from __future__ import annotations

import re
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
from telcoflow._net import client_ssl_context
from telcoflow.audio import tone_level
from telcoflow.sandbox import CallSpec, Connector, Sandbox

from ..helpers import WAIT, CallInbox, echo_audio
from .loopback import connect_fails, serve_loopback

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
            await echo_audio(call)
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
    # Not a bare EndOfStream(): what happened, and which file to look at.
    assert "client certificate" in str(info.value)
    assert str(cert_path) in str(info.value)
    assert sb.control_sessions() == []


async def test_an_application_s_own_certificate_is_its_connector(tmp_path: Path) -> None:
    """``Connector(client_cert=...)``: a certificate from a CA the sandbox never saw (as the
    hosted service's would be) is trusted as it is, and identifies its connector."""
    own = trustme.CA(organization_name="the hosted service").issue_cert("agent.example")
    cert_path, key_path = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    own.cert_chain_pems[0].write_to_path(cert_path)
    own.private_key_pem.write_to_path(key_path)
    connectors = [Connector("k", "uuid-first"), Connector("k2", "uuid-app", client_cert=cert_path)]
    async with Sandbox(tls=True, connectors=connectors) as sb:
        config = TelcoflowClientConfig.production(
            cert_path=cert_path, key_path=key_path, ca_path=sb.ca_path, base_url=sb.base_url
        )
        async with TelcoflowClient(config) as client:
            inbox = CallInbox(client)
            try:
                sim = await sb.create_call(CallSpec(connector_uuid="uuid-app"))
                call = await inbox.next()
                assert call.call_id == sim.call_id
                await call.answer()
                assert sim.state is CallState.ANSWERED
            finally:
                inbox.close()
            # Calls of another connector are not offered to it.
            other = await sb.create_call(CallSpec(connector_uuid="uuid-first"))
            assert other.bound_to is None


async def test_a_client_cert_needs_tls() -> None:
    with pytest.raises(ValueError, match="client_cert needs tls=True"):
        Sandbox(connectors=[Connector("k", "u", client_cert="cert.pem")])


def _pair(tmp_path: Path, name: str) -> tuple[str, str]:
    issued = trustme.CA().issue_cert(f"{name}.example")
    cert, key = tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_a_wrong_certificate_or_key_names_the_file_and_the_cause(tmp_path: Path) -> None:
    """The trap: OpenSSL says ``[SSL] PEM lib`` or ``KEY_VALUES_MISMATCH`` naming neither
    file. The configuration says which file and what is wrong with it."""
    cert, key = _pair(tmp_path, "one")
    other_cert, other_key = _pair(tmp_path, "two")
    cases = [
        (other_key, f"key_path '{other_key}' is not the private key of cert_path '{cert}'"),
        (cert, f"key_path '{cert}' is not a private key: it holds a certificate"),
    ]
    for bad_key, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            TelcoflowClientConfig.production(cert_path=cert, key_path=bad_key)
    with pytest.raises(ValueError, match=re.escape(f"cert_path '{key}' is not a client cert")):
        TelcoflowClientConfig.production(cert_path=key, key_path=key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        TelcoflowClientConfig.production(cert_path=str(garbage), key_path=key)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=r"cert_path '.*broken\.pem'.*cannot be parsed"):
        TelcoflowClientConfig.production(cert_path=str(broken), key_path=key)
    with pytest.raises(ValueError, match=r"ca_path '.*garbage\.pem' is not a CA certificate"):
        TelcoflowClientConfig.production(cert_path=cert, key_path=key, ca_path=str(garbage))
    assert TelcoflowClientConfig.production(cert_path=other_cert, key_path=other_key)


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = _pair(tmp_path, "one")
    loaded = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="is encrypted with a passphrase"):
        TelcoflowClientConfig.production(cert_path=cert, key_path=str(encrypted))


def test_the_ca_comes_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("TELCOFLOW_CA_PATH", str(path))
    config = TelcoflowClientConfig.sandbox(api_key="k", connector_uuid="u")
    assert config.ca_path == str(path)
    explicit = TelcoflowClientConfig.sandbox(api_key="k", connector_uuid="u", ca_path=str(path))
    assert explicit.ca_path == str(path)
    monkeypatch.setenv("TELCOFLOW_CA_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"ca_path '.*missing\.pem' cannot be read"):
        TelcoflowClientConfig.sandbox(api_key="k", connector_uuid="u")


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


# --- the connection layer: wss:// over loopback (telcoflow._net) ----------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


async def test_wss_round_trip_with_mutual_tls(ca: trustme.CA, tmp_path: Path) -> None:
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client_cert = ca.issue_cert("agent@example.com")
    cert_path = tmp_path / "client.pem"
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    context = client_ssl_context(ca_path=str(ca_path), cert_path=str(cert_path))
    tls = server_tls(ca, require_client_cert=True)
    async with serve_loopback(tls=tls) as server, server.connected(ssl_context=context) as client:
        with anyio.fail_after(WAIT):
            peer = await server.next_connection()
            await client.send("over tls")
            assert await peer.receive() == "over tls"
            await peer.send(b"\x00" * 100_000)
            assert await client.receive() == b"\x00" * 100_000


async def test_wss_with_an_untrusted_certificate_raises_connect_failed(ca: trustme.CA) -> None:
    await connect_fails(tls=server_tls(ca), ssl_context=ssl.create_default_context())
