"""The command line: the demo (the README's main job) and ``sandbox serve``."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from telcoflow._cli import main


@pytest.mark.parametrize("backend", ["asyncio", "trio", "uvloop"])
def test_demo_succeeds_and_reports_who_heard_whom(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--backend", backend, "demo"]) == 0
    out = capsys.readouterr().out
    assert "Result: OK" in out
    assert "caller heard the agent's greeting (660 Hz)" in out
    assert "callee heard the caller (440 Hz)" in out
    assert "FAIL" not in out


@pytest.mark.parametrize("backend", ["trio", "uvloop"])
def test_the_backend_may_follow_the_subcommand(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``telcoflow demo --backend trio`` as ``telcoflow --backend trio demo``: users put options
    after the command they belong to."""
    from telcoflow._cli import _parser

    assert main(["demo", "--backend", backend]) == 0
    assert "Result: OK" in capsys.readouterr().out
    assert _parser().parse_args(["demo", "--backend", backend]).backend == backend
    assert _parser().parse_args(["--backend", backend, "demo"]).backend == backend
    serve = _parser().parse_args(["sandbox", "serve", "--backend", backend])
    assert serve.backend == backend
    assert _parser().parse_args(["demo"]).backend == "asyncio"


def test_uvloop_backend_runs_on_uvloops_loop() -> None:
    pytest.importorskip("uvloop")
    import asyncio

    from telcoflow._cli._backend import run_async

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_async(loop_type, backend="uvloop").startswith("uvloop")
    assert run_async(loop_type, backend="asyncio").startswith("asyncio")


def test_a_missing_backend_library_is_named_with_its_install_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert main(["--backend", "uvloop", "demo"]) == 2
    err = capsys.readouterr().err
    assert 'uvloop is not installed; pip install "telcoflow-anyio[uvloop]"' in err


def test_demo_at_8khz(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--sample-rate", "8000"]) == 0
    assert "Result: OK" in capsys.readouterr().out


def test_sandbox_serve_answers_health_and_stops_on_interrupt() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "telcoflow", "sandbox", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the sandbox is listening
        assert "serving on ws://127.0.0.1:" in first, first
        port = int(first.rsplit(":", 1)[1])
        health = httpx.get(f"http://127.0.0.1:{port}/sandbox/health", timeout=10).json()
        assert health["status"] == "ok"
        assert health["connectors"][0]["connector_uuid"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_sandbox_serve_reports_a_busy_port() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "telcoflow", "sandbox", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    ) as first:
        try:
            assert first.stdout is not None
            port = first.stdout.readline().rsplit(":", 1)[1].strip()
            second = subprocess.run(
                [sys.executable, "-m", "telcoflow", "sandbox", "serve", "--port", port],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert second.returncode == 1
            assert f"cannot serve on 127.0.0.1:{port}" in second.stderr
        finally:
            first.send_signal(signal.SIGINT)
            first.wait(timeout=10)
            first.stdout.close()  # type: ignore[union-attr]


def test_sandbox_serve_accepts_the_application_s_own_credentials() -> None:
    """``--connector KEY:UUID`` (repeatable): an application's configuration works unchanged."""
    uuids = ["aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telcoflow",
            "sandbox",
            "serve",
            "--port",
            "0",
            "--connector",
            f"app-key-1:{uuids[0]}",
            "--connector",
            f"app-key-2:{uuids[1]}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(first.rsplit(":", 1)[1])
        health = httpx.get(f"http://127.0.0.1:{port}/sandbox/health", timeout=10).json()
        assert [c["connector_uuid"] for c in health["connectors"]][1:] == uuids
        assert [c["api_key"] for c in health["connectors"]][1:] == ["app-key-1", "app-key-2"]
        numbers = [c["number"] for c in health["connectors"]]
        assert len(set(numbers)) == 3, "each connector has a number of its own"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_sandbox_serve_refuses_a_malformed_connector(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sandbox", "serve", "--connector", "no-colon-here"])
    assert info.value.code == 2
    assert "API_KEY:CONNECTOR_UUID" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["sandbox", "serve", "--port", "99999"],
        ["sandbox", "serve", "--port", "http"],
        ["run", "agent:answer", "--http-port", "70000"],
    ],
)
def test_a_port_out_of_range_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "a port is 0..65535" in err
    assert "Traceback" not in err
