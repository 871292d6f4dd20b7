"""The README's promise, over real processes: an application written for the hosted service
runs against a local sandbox unchanged, with both factories. Its file names its own credentials
(API key, or the production certificate and key); only the environment points it elsewhere
(``TELCOFLOW_BASE_URL``, and ``TELCOFLOW_CA_PATH`` for the sandbox's TLS)."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme

#: Processes start Python and import the SDK.
TIMEOUT = 30

APP = """
import sys

import anyio

from telcoflow import TelcoflowClient, TelcoflowClientConfig

CONFIG = {config}


async def main():
    async with TelcoflowClient(CONFIG) as client:
        print("ready", flush=True)
        async for call in client.incoming_calls():
            await call.answer()
            await call.close()
            print("took", call.call_id, flush=True)
            return


anyio.run(main, backend=sys.argv[1])
"""

API_KEY_CONFIG = (
    'TelcoflowClientConfig.sandbox(api_key="app-key", '
    'connector_uuid="aaaaaaaa-0000-4000-8000-00000000000a")'
)
MTLS_CONFIG = 'TelcoflowClientConfig.production(cert_path="cert.pem", key_path="key.pem")'


@contextmanager
def _process(args: list[str], **options: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,  # type: ignore[call-overload]
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _read_until(proc: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], list[str]]:
    """Lines of ``proc``'s stdout up to one matching ``pattern`` (readline blocks; the process
    exiting first ends it with a failure showing what it said)."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if m := re.search(pattern, line):
            return m, seen
    err = proc.stderr.read() if proc.stderr is not None else ""
    pytest.fail(f"no line matching {pattern!r} before exit; stdout: {seen}; stderr: {err}")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("factory", ["sandbox", "production"])
def test_an_unchanged_application_takes_a_call_on_the_sandbox(
    tmp_path: Path, factory: str, backend: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELCOFLOW_")}
    serve = [sys.executable, "-m", "telcoflow", "sandbox", "serve", "--port", "0"]
    if factory == "sandbox":
        serve += ["--connector", "app-key:aaaaaaaa-0000-4000-8000-00000000000a"]
        config = API_KEY_CONFIG
    else:
        # The application's own certificate, from a CA the sandbox has never seen (as the
        # hosted service's would be).
        cert = trustme.CA(organization_name="the hosted service").issue_cert(
            "agent.example", common_name="bbbbbbbb-0000-4000-8000-00000000000b"
        )
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        serve += ["--client-cert", str(tmp_path / "cert.pem")]
        config = MTLS_CONFIG
    (tmp_path / "app.py").write_text(APP.format(config=config))
    with _process(serve, env=env) as sandbox:
        first, _ = _read_until(sandbox, r"serving on (wss?://[\d.]+:\d+)")
        base_url = first[1]
        app_env = {**env, "TELCOFLOW_BASE_URL": base_url}
        verify: ssl.SSLContext | bool = True
        if factory == "production":
            ca = _read_until(sandbox, r"CA:\s+(\S+)")[0][1]
            app_env["TELCOFLOW_CA_PATH"] = ca
            verify = ssl.create_default_context(cafile=ca)
            uuid = "bbbbbbbb-0000-4000-8000-00000000000b"
        else:
            uuid = "aaaaaaaa-0000-4000-8000-00000000000a"
        with _process([sys.executable, "app.py", backend], cwd=tmp_path, env=app_env) as app:
            _read_until(app, "^ready")
            http_url = "http" + base_url.removeprefix("ws")
            with httpx.Client(base_url=http_url, verify=verify, timeout=TIMEOUT) as http:
                placed = http.post("/sandbox/calls", json={"connector_uuid": uuid})
                assert placed.status_code == 201, placed.text
                call_id = placed.json()["call_id"]
                took = _read_until(app, r"^took (\S+)")[0]
                assert took[1] == call_id
                assert app.wait(timeout=TIMEOUT) == 0
                record = http.get(f"/sandbox/calls/{call_id}").json()
        assert [c["command"] for c in record["commands"]] == ["call.answer", "call.close"]
        assert record["ended_reason"] == "agent_close"
