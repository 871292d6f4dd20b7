"""The command line's client of a running sandbox (``telcoflow sandbox call|calls|hangup|
recording``), against a real sandbox served by ``telcoflow sandbox serve`` in a subprocess."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from telcoflow import CallState, TelcoflowClient, TelcoflowClientConfig
from telcoflow._cli import main
from telcoflow._cli.sandbox_client import URL_ENV, SandboxApi, StatusLine, normalize_url
from telcoflow.audio import tone, tone_level, write_wav
from telcoflow.sandbox import Sandbox

from ..helpers import WAIT, CallInbox

Result = tuple[int, str, str]
#: Runs ``telcoflow sandbox COMMAND --url URL ARGS...``; returns (exit code, stdout, stderr).
Cli = Callable[..., Result]
#: A second connector of the module's sandbox (its number: +6591000001).
OTHER_CONNECTOR = "bbbbbbbb-0000-4000-8000-0000000000bb"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """The HTTP address of a sandbox served from the command line for the whole module."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "telcoflow", "sandbox", "serve", "--port", "0"),
            *("--connector", f"other-key:{OTHER_CONNECTOR}"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the sandbox is listening
        assert "serving on ws://127.0.0.1:" in first, first
        yield f"http://127.0.0.1:{int(first.rsplit(':', 1)[1])}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def cli(url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("calls", "--json")`` runs ``telcoflow sandbox calls --url URL --json`` in-process
    and returns ``(exit code, stdout, stderr)``."""

    def run(command: str, *args: str) -> Result:
        code = main(["sandbox", command, "--url", url, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _place(cli: Cli, *args: str) -> str:
    code, out, err = cli("call", "--json", *args)
    assert code == 0, err
    placed = json.loads(out)
    assert placed["state"] == "PENDING"
    assert placed["call_id"].startswith("call-")
    return str(placed["call_id"])


def _calls(cli: Cli) -> dict[str, dict[str, Any]]:
    code, out, _ = cli("calls", "--json")
    assert code == 0
    listed = json.loads(out)
    assert set(listed) == {"calls"}, "the shape of GET /sandbox/calls"
    return {c["call_id"]: c for c in listed["calls"]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- call and calls -------------------------------------------------------------------------------


def test_call_with_a_tone_is_placed_and_listed(cli: Cli) -> None:
    code, out, err = cli("call", "--tone", "523.25", "--hangup-after", "30")
    assert (code, err) == (0, "")
    assert out.startswith("placed call call-")
    assert out.rstrip().endswith("(PENDING)")
    call_id = out.split()[2]
    listed = _calls(cli)[call_id]
    assert listed["state"] == "PENDING"
    assert listed["from"] == "+6590000001"
    assert listed["to"] == "+6590000002"
    assert cli("hangup", call_id)[0] == 0


def test_call_with_a_wav_and_options(cli: Cli, tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    wav.write_bytes(write_wav(None, tone(300, 0.5, 16000), 16000))
    call_id = _place(
        cli,
        "--wav",
        str(wav),
        "--once",
        "--from",
        "+15550001",
        "--to",
        "+15550002",
        "--callee-no-answer",
        "--callee-tone",
        "600",
    )
    listed = _calls(cli)[call_id]
    assert (listed["from"], listed["to"]) == ("+15550001", "+15550002")
    cli("hangup", call_id)


def test_call_with_silence_and_a_declining_callee(cli: Cli) -> None:
    call_id = _place(cli, "--silence", "--callee-decline")
    assert _calls(cli)[call_id]["state"] == "PENDING"
    cli("hangup", call_id)


def test_a_call_to_another_connector_rings_its_own_number(cli: Cli) -> None:
    default = _place(cli, "--hangup-after", "0")
    other = _place(cli, "--connector", OTHER_CONNECTOR, "--hangup-after", "0")
    calls = _calls(cli)
    assert calls[default]["to"] == "+6590000002"
    assert calls[other]["to"] == "+6591000001", "not the default connector's number"


def test_calls_as_a_table_and_as_json(cli: Cli) -> None:
    call_id = _place(cli, "--from", "+4420000001")
    cli("hangup", call_id)
    code, out, _ = cli("calls")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["CALL", "ID", "FROM", "TO", "STATE", "MODE", "ENDED", "COMMANDS"]
    row = next(r for r in rows if r.startswith(call_id))
    assert row.split() == [
        call_id,
        "+4420000001",
        "+6590000002",
        "DISCONNECTED",
        "-",
        "caller_hangup",
        "0",
    ]
    listed = _calls(cli)[call_id]
    assert listed["ended_reason"] == "caller_hangup"
    assert listed["commands"] == []
    assert set(listed["stats"]) >= {"agent_bytes_received", "underrun_ms", "excess_bytes"}


def test_the_url_comes_from_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(URL_ENV, url.replace("http://", "ws://"))  # as `serve` prints it
    assert main(["sandbox", "calls", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["calls"], list)


def test_the_application_s_base_url_points_the_cli_at_the_same_sandbox(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``export TELCOFLOW_BASE_URL=ws://...`` (what ``serve`` says to set) serves both the
    application and the CLI; ``TELCOFLOW_SANDBOX_URL`` wins when both are set."""
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv("TELCOFLOW_BASE_URL", url.replace("http://", "ws://"))
    assert main(["sandbox", "calls", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["calls"], list)
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{_closed_port()}")
    assert main(["sandbox", "calls"]) == 2
    assert "cannot reach the sandbox" in capsys.readouterr().err


# --- follow ---------------------------------------------------------------------------------------


def test_follow_a_call_until_the_caller_hangs_up(cli: Cli) -> None:
    code, out, err = cli("call", "--hangup-after", "1", "--follow")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("placed call call-")
    assert "following it" in lines[0]
    # Not a terminal: plain status lines, no carriage returns.
    assert "\r" not in out
    assert any("PENDING (no agent)" in line and "commands 0" in line for line in lines)
    call_id = lines[0].split()[2]
    assert f"call {call_id} DISCONNECTED (caller_hangup)" in out
    assert "commands: none" in out
    assert "no agent was connected to take the call" in out


def test_follow_with_json_prints_the_final_call(cli: Cli) -> None:
    code, out, _ = cli("call", "--hangup-after", "0.3", "--follow", "--json")
    assert code == 0
    final = json.loads(out)
    assert final["state"] == "DISCONNECTED"
    assert final["ended_reason"] == "caller_hangup"


def test_interrupting_follow_leaves_the_call_up(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    polls = 0
    real = SandboxApi.call

    def call_then_interrupt(self: SandboxApi, call_id: str) -> dict[str, Any]:
        nonlocal polls
        polls += 1
        if polls == 2:
            raise KeyboardInterrupt
        return real(self, call_id)

    monkeypatch.setattr(SandboxApi, "call", call_then_interrupt)
    code, out, err = cli("call", "--follow")
    monkeypatch.undo()
    assert code == 130
    call_id = out.split()[2]
    assert f"stopped following {call_id}; the call goes on" in err
    assert _calls(cli)[call_id]["state"] == "PENDING"
    cli("hangup", call_id)


def test_status_line_on_a_terminal_is_rewritten_in_place() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    line = StatusLine(term)
    line.show("PENDING  commands 0", key=1)
    line.show("ANSWERED", key=2)
    line.end()
    line.end()  # idempotent
    # The shorter line blanks what is left of the longer one.
    assert term.getvalue() == "\rPENDING  commands 0\rANSWERED" + " " * 11 + "\n"


# --- hangup and recording -------------------------------------------------------------------------


def test_caller_hangup(cli: Cli) -> None:
    call_id = _place(cli)
    code, out, err = cli("hangup", call_id)
    assert (code, err) == (0, "")
    assert out.strip() == f"caller hung up call {call_id}: DISCONNECTED (caller_hangup)"
    # Again: the call is over; nobody hung up, and the exit code says so.
    code, out, err = cli("hangup", call_id)
    assert (code, out) == (1, "")
    assert err == f"telcoflow: call {call_id} has already ended (caller_hangup); nobody hung up\n"
    code, out, err = cli("hangup", call_id, "--json")
    assert (code, err) == (1, "")
    assert json.loads(out) == {
        "error": f"call {call_id} has already ended (caller_hangup); nobody hung up",
        "exit_code": 1,
    }


def test_hangup_with_json_prints_the_ended_call(cli: Cli) -> None:
    call_id = _place(cli)
    code, out, _ = cli("hangup", call_id, "--json")
    assert code == 0
    assert json.loads(out)["state"] == "DISCONNECTED"


def test_callee_hangup_is_refused_unless_the_callee_is_on_the_call(cli: Cli) -> None:
    call_id = _place(cli)
    code, out, err = cli("hangup", call_id, "--callee")
    assert (code, out) == (1, "")
    assert err == f"telcoflow: the callee is not on call {call_id} (state PENDING)\n"
    cli("hangup", call_id)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_callee_hangup_of_a_connected_call_and_its_recording(
    backend: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An SDK agent answers and connects; the CLI runs in a worker thread meanwhile."""

    async def cli(*args: str) -> Result:
        code = await anyio.to_thread.run_sync(main, ["sandbox", *args])
        out, err = capsys.readouterr()
        return code, out, err

    async def scenario() -> None:
        async with Sandbox() as sb:
            config = TelcoflowClientConfig.sandbox(
                api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url
            )
            async with TelcoflowClient(config) as client:
                inbox = CallInbox(client)
                try:
                    code, out, err = await cli(
                        "call", "--url", sb.http_url, "--json", "--callee-answer-after", "0"
                    )
                    assert code == 0, err
                    call_id = json.loads(out)["call_id"]
                    call = await inbox.next()
                    assert call.call_id == call_id
                    await call.answer()
                    await call.connect(ring_time_seconds=5)
                    assert call.state is CallState.CONNECTED
                    code, out, _ = await cli("calls", "--url", sb.http_url)
                    row = next(r for r in out.splitlines() if r.startswith(call_id))
                    assert row.split()[3:] == ["CONNECTED", "barge", "-", "2"]
                    code, out, err = await cli("hangup", call_id, "--callee", "--url", sb.http_url)
                    assert (code, err) == (0, "")
                    assert out.strip() == (
                        f"callee hung up call {call_id}: DISCONNECTED (callee_hangup)"
                    )
                    with anyio.fail_after(WAIT):
                        await call.wait_terminated()
                    path = tmp_path / "callee.wav"
                    code, out, err = await cli(
                        "recording", call_id, "callee", "--url", sb.http_url, "-o", str(path)
                    )
                    assert (code, err) == (0, "")
                    assert f"to {path}: " in out
                    assert out.rstrip().endswith("s at 24000 Hz")
                finally:
                    inbox.close()
        with wave.open(str(path), "rb") as w:
            assert w.getframerate() == 24000
            heard = w.readframes(w.getnframes())
        assert tone_level(heard, 24000, 440) > 0.02  # the callee heard the caller

    anyio.run(scenario, backend=backend)


def test_recording_is_saved_as_a_wav(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    call_id = _place(cli, "--hangup-after", "0")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("recording", call_id, "caller")
    assert (code, err) == (0, "")
    saved = tmp_path / f"{call_id}-caller.wav"
    assert out.strip() == (
        f"saved what the caller heard on {call_id} to {call_id}-caller.wav: 0.00 s at 24000 Hz"
    )
    with wave.open(str(saved), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
    code, out, _ = cli("recording", call_id, "agent", "-o", "agent.wav", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["path"] == str(tmp_path / "agent.wav")
    assert report["sample_rate"] == 24000
    assert (tmp_path / "agent.wav").exists()


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("hangup", "call-nope"),
        ("hangup", "call-nope", "--callee"),
        ("recording", "call-nope", "caller"),
    ],
)
def test_an_unknown_call(cli: Cli, args: tuple[str, ...]) -> None:
    code, out, err = cli(*args)
    assert (code, out) == (1, "")
    assert err == "telcoflow: no call 'call-nope'\n"
    code, out, err = cli(*args, "--json")  # under --json the error is JSON too, on stdout
    assert (code, err) == (1, "")
    assert json.loads(out) == {"error": "no call 'call-nope'", "exit_code": 1}


def test_a_tone_the_sandbox_refuses(cli: Cli) -> None:
    code, out, err = cli("call", "--tone", "20000")
    assert (code, out) == (1, "")
    assert err == "telcoflow: caller.tone_hz must be a frequency in Hz (0..12000)\n"


def test_files_that_cannot_be_read(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    code, _, err = cli("call", "--wav", str(missing))
    assert code == 1
    assert err == f"telcoflow: cannot read {missing}: No such file or directory\n"
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    code, _, err = cli("call", "--wav", str(text))
    assert code == 1
    assert err.startswith(f"telcoflow: {text} is not a WAV file (")
    call_id = _place(cli, "--hangup-after", "0")
    nowhere = tmp_path / "no" / "such" / "dir.wav"
    code, _, err = cli("recording", call_id, "caller", "-o", str(nowhere))
    assert code == 1
    assert err == f"telcoflow: cannot write {nowhere}: No such file or directory\n"


def test_once_needs_a_wav(cli: Cli) -> None:
    code, _, err = cli("call", "--once")
    assert code == 2
    assert err == "telcoflow: --once applies to --wav only\n"


@pytest.mark.parametrize(
    "args",
    [
        ("call", "--tone", "loud"),
        ("call", "--tone", "-5"),
        ("call", "--hangup-after", "nan"),
        ("call", "--tone", "440", "--silence"),
        ("call", "--callee-decline", "--callee-no-answer"),
        ("recording", "call-x", "bystander"),
        ("hangup",),
    ],
)
def test_bad_arguments_are_usage_errors(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: telcoflow sandbox" in err
    assert "Traceback" not in err


def test_an_unreachable_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    for args in (
        ("calls",),
        ("call", "--follow"),
        ("hangup", "call-x"),
        ("recording", "c", "agent"),
    ):
        code = main(["sandbox", *args, "--url", f"127.0.0.1:{port}"])
        out, err = capsys.readouterr()
        assert (code, out) == (2, "")
        assert err == (
            f"telcoflow: cannot reach the sandbox at http://127.0.0.1:{port} (connection refused); "
            "start one with `telcoflow sandbox serve`\n"
        )


def test_an_unreachable_sandbox_from_the_console_has_no_traceback() -> None:
    port = _closed_port()
    done = subprocess.run(
        [sys.executable, "-m", "telcoflow", "sandbox", "calls"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, URL_ENV: f"http://127.0.0.1:{port}"},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("telcoflow: cannot reach the sandbox at ")
    assert done.stderr.count("\n") == 1


def test_a_sandbox_serving_tls(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")

    async def scenario() -> None:
        async with Sandbox(tls=True) as sb:
            assert sb.ca_path is not None
            calls = ["sandbox", "calls", "--url", sb.base_url]  # wss://, as `serve` prints it
            assert await anyio.to_thread.run_sync(main, [*calls, "--ca", sb.ca_path]) == 0
            out, err = capsys.readouterr()
            assert (out, err) == ("no calls\n", "")
            assert await anyio.to_thread.run_sync(main, calls) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"telcoflow: cannot reach the sandbox at {sb.http_url} (TLS: ")
            assert "--ca" in err
            assert await anyio.to_thread.run_sync(main, [*calls, "--ca", str(junk)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"telcoflow: cannot use CA file {junk}: not a PEM certificate")

    anyio.run(scenario)


def test_urls_as_users_paste_them() -> None:
    assert normalize_url("ws://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert normalize_url("wss://localhost:9/") == "https://localhost:9"
    assert normalize_url(" 127.0.0.1:8765 ") == "http://127.0.0.1:8765"
    assert normalize_url("https://sandbox.example") == "https://sandbox.example"
