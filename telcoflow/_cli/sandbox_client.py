"""``telcoflow sandbox call|calls|hangup|recording``: a client of a running sandbox's HTTP API.

Readable output by default and ``--json`` for scripts. Expected failures (the sandbox is not
running, the API refused a request, a file cannot be read) end in one line on stderr and an exit
code, never a traceback: 2 when the sandbox cannot be reached or the command line is wrong, 1 when
the sandbox refused the request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import shutil
import ssl
import sys
import time
import wave
from collections.abc import Callable
from typing import Any, TextIO

import httpx

__all__ = ["DEFAULT_URL", "URL_ENV", "CliError", "SandboxApi", "add_commands"]

#: Where the client subcommands look for the sandbox: ``--url``, else this variable, else the
#: address ``telcoflow sandbox serve`` listens on by default.
URL_ENV = "TELCOFLOW_SANDBOX_URL"
#: An application's variable for the same server (``ws://...``, as ``serve`` prints it): used
#: when ``TELCOFLOW_SANDBOX_URL`` is not set, so one ``export`` points both at the sandbox.
BASE_URL_ENV = "TELCOFLOW_BASE_URL"
#: The CA of a TLS sandbox, as applications take it.
CA_ENV = "TELCOFLOW_CA_PATH"
#: The admin token of a sandbox that requires one for its HTTP API (``serve --admin-token``).
TOKEN_ENV = "TELCOFLOW_SANDBOX_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8765"

#: The sandbox is usually local: a connection that takes seconds is not coming. Reads may carry a
#: WAV of minutes of audio either way, so they get longer.
TIMEOUT = httpx.Timeout(15.0, connect=3.0)
#: How often ``--follow`` asks for the call's state: fast enough to look live, cheap for the server.
POLL_S = 0.5
#: Without a terminal, ``--follow`` prints a line when the call changes, or at least this often.
PLAIN_EVERY_S = 5.0

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: ``main`` prints the message on stderr and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def normalize_url(raw: str) -> str:
    """The HTTP base URL for what a user may paste: ``ws://`` (as ``serve`` prints it), a bare
    ``host:port``, or an ``http(s)://`` URL."""
    url = raw.strip().rstrip("/")
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    if "://" not in url:
        return f"http://{url}"
    return url


def _reason(exc: BaseException) -> str:
    """Why a connection failed, from the OSError under httpx's exception where there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"TLS: {seen.reason or seen}"
        if isinstance(seen, OSError) and seen.strerror:
            text = seen.strerror
            return text[:1].lower() + text[1:]
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:].rstrip(".")


class SandboxApi:
    """The sandbox's HTTP API (SANDBOX.md) over a synchronous httpx client, with its failures
    turned into :class:`CliError`."""

    def __init__(self, url: str, ca: str | None = None, token: str | None = None) -> None:
        self.url = normalize_url(url)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            try:
                verify = ssl.create_default_context(cafile=ca)
            except ssl.SSLError as exc:
                reason = f"not a PEM certificate ({exc.reason or exc})"
                raise CliError(f"cannot use CA file {ca}: {reason}", EXIT_UNREACHABLE) from None
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise CliError(f"cannot use CA file {ca}: {reason}", EXIT_UNREACHABLE) from None
        self._http = httpx.Client(
            base_url=self.url, timeout=TIMEOUT, verify=verify, headers=headers
        )

    def __enter__(self) -> SandboxApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request; raise :class:`CliError` unless the sandbox answered 2xx."""
        try:
            response = self._http.request(method, path, json=body)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(f"bad sandbox URL {self.url!r}: {exc}", EXIT_UNREACHABLE) from None
        except httpx.TransportError as exc:
            raise CliError(self._unreachable(exc), EXIT_UNREACHABLE) from None
        if response.is_success:
            return response
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = None
        if not isinstance(message, str):
            raise CliError(
                f"the server at {self.url} answered {response.status_code} "
                f"{response.reason_phrase} to {method} {path}; is it a telcoflow sandbox?"
            )
        raise CliError(message)

    def _unreachable(self, exc: httpx.TransportError) -> str:
        reason = _reason(exc)
        if reason.startswith("TLS"):
            hint = "for a sandbox serving TLS pass the CA it printed with --ca, else use http://"
        elif isinstance(exc, httpx.RemoteProtocolError) and self.url.startswith("http://"):
            hint = "if it serves TLS (`sandbox serve --tls`), use https:// and --ca"
        elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            hint = "start one with `telcoflow sandbox serve`"
        else:
            return f"lost the sandbox at {self.url} ({reason})"
        return f"cannot reach the sandbox at {self.url} ({reason}); {hint}"

    def json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self.request(method, path, body)
        try:
            value = response.json()
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise CliError(
                f"the server at {self.url} did not answer {method} {path} with a JSON object; "
                "is it a telcoflow sandbox?"
            )
        return value

    def call(self, call_id: str) -> dict[str, Any]:
        return self.json("GET", f"/sandbox/calls/{_segment(call_id)}")


def _segment(value: str) -> str:
    """A call id as one path segment: one with a slash in it cannot name a call."""
    if not value or "/" in value or "?" in value or "#" in value:
        raise CliError(f"no call {value}")
    return value


# --- argument types -------------------------------------------------------------------------------


def _hz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frequency in Hz") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frequency in Hz (above 0)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


# --- output ---------------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _bytes(n: int) -> str:
    return f"{n:,} bytes"


def _commands(call: dict[str, Any]) -> str:
    items = []
    for c in call.get("commands") or []:
        if c.get("success") is None:
            outcome = "pending"
        elif c["success"]:
            outcome = "ok"
        else:
            outcome = f"failed ({c.get('error_code') or 'no code'})"
        items.append(f"{c.get('command')} {outcome}")
    return "; ".join(items) if items else "none"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def _status(call: dict[str, Any], elapsed: float) -> str:
    """The live status line of a followed call; short enough for an 80-column terminal."""
    state = call["state"]
    if state == "PENDING" and not call.get("offers", 1):
        state = "PENDING (no agent)"
    stats = call.get("stats") or {}
    return (
        f"[{elapsed:6.1f} s] {state}  mode {call.get('agent_mode') or '-'}  "
        f"commands {len(call.get('commands') or [])}  "
        f"agent sent {_size(stats.get('agent_bytes_received', 0))}  "
        f"underrun {stats.get('underrun_ms', 0)} ms"
    )


def _summary(call: dict[str, Any]) -> str:
    stats = call.get("stats") or {}
    latency = stats.get("echo_latency_ms")
    echo = f"p50 {latency['p50']} ms, p99 {latency['p99']} ms" if latency else "none measured"
    lines = [
        f"call {call['call_id']} {call['state']} ({call.get('ended_reason') or 'still going'})",
        f"  {call['from']} -> {call['to']}, agent mode {call.get('agent_mode') or '-'}",
        f"  commands: {_commands(call)}",
        f"  agent audio received: {_bytes(stats.get('agent_bytes_received', 0))}, "
        f"underrun {stats.get('underrun_ms', 0)} ms, "
        f"excess {_bytes(stats.get('excess_bytes', 0))}, echo latency {echo}",
    ]
    if call.get("offers") == 0:
        lines.append("  no agent was connected to take the call")
    return "\n".join(lines)


def _table(calls: list[dict[str, Any]]) -> str:
    header = ("CALL ID", "FROM", "TO", "STATE", "MODE", "ENDED", "COMMANDS")
    rows = [header] + [
        (
            str(c["call_id"]),
            str(c["from"]),
            str(c["to"]),
            str(c["state"]),
            str(c.get("agent_mode") or "-"),
            str(c.get("ended_reason") or "-"),
            str(len(c.get("commands") or [])),
        )
        for c in calls
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class StatusLine:
    """One line rewritten in place on a terminal; plain lines, when something changed or every
    :data:`PLAIN_EVERY_S`, when the output is a file or a pipe."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._width = 0
        self._key: object = None
        self._printed_at = -math.inf

    def show(self, text: str, key: object) -> None:
        if self.tty:
            columns = shutil.get_terminal_size().columns - 1
            text = text[:columns] if columns > 0 else text
            pad = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self.stream.flush()
            self._width = len(text)
            return
        now = time.monotonic()
        if key != self._key or now - self._printed_at >= PLAIN_EVERY_S:
            print(text, file=self.stream, flush=True)
            self._key, self._printed_at = key, now

    def end(self) -> None:
        """Leave the status line, so what comes next starts on a line of its own."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


# --- subcommands ----------------------------------------------------------------------------------


def _voice(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.once and args.wav is None:
        raise CliError("--once applies to --wav only", EXIT_UNREACHABLE)
    if args.tone is not None:
        return {"tone_hz": args.tone}
    if args.silence:
        return {"silence": True}
    if args.wav is None:
        return None
    try:
        with open(args.wav, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CliError(f"cannot read {args.wav}: {exc.strerror or exc}") from None
    try:
        with wave.open(io.BytesIO(data), "rb"):
            pass
    except (wave.Error, EOFError) as exc:
        raise CliError(f"{args.wav} is not a WAV file ({exc})") from None
    return {"wav_base64": base64.b64encode(data).decode("ascii"), "loop": not args.once}


def _callee(args: argparse.Namespace) -> dict[str, Any] | None:
    callee: dict[str, Any] = {}
    if args.callee_answer_after is not None:
        callee["answer_after_s"] = args.callee_answer_after
    if args.callee_no_answer:
        callee["answer"] = False
    if args.callee_decline:
        callee["decline"] = True
    if args.callee_tone is not None:
        callee["tone_hz"] = args.callee_tone
    return callee or None


def _call(api: SandboxApi, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"from": args.from_number}
    if args.to_number is not None:
        body["to"] = args.to_number
    if (voice := _voice(args)) is not None:
        body["caller"] = voice
    if args.hangup_after is not None:
        body["caller_hangup_after_s"] = args.hangup_after
    if (callee := _callee(args)) is not None:
        body["callee"] = callee
    if args.connector is not None:
        body["connector_uuid"] = args.connector
    placed = api.json("POST", "/sandbox/calls", body)
    call_id = str(placed["call_id"])
    if not args.follow:
        if args.json:
            _print_json(placed)
        else:
            print(f"placed call {call_id} ({placed['state']})")
        return 0
    if not args.json:
        print(f"placed call {call_id} ({placed['state']}); following it, Ctrl-C stops following")
        sys.stdout.flush()
    return _follow(api, call_id, args.json)


def _follow(api: SandboxApi, call_id: str, as_json: bool) -> int:
    """Poll the call until it is over; show a live status line unless ``as_json``."""
    line = None if as_json else StatusLine(sys.stdout)
    start = time.monotonic()
    try:
        while True:
            call = api.call(call_id)
            if call["state"] == "DISCONNECTED":
                break
            if line is not None:
                key = (call["state"], call.get("agent_mode"), len(call.get("commands") or []))
                line.show(_status(call, time.monotonic() - start), key)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        if line is not None:
            line.end()
        print(
            f"stopped following {call_id}; the call goes on "
            f"(`telcoflow sandbox hangup {call_id}` ends it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if line is not None:
            line.end()
    if as_json:
        _print_json(call)
    else:
        print(_summary(call))
    return 0


def _calls(api: SandboxApi, args: argparse.Namespace) -> int:
    calls = api.json("GET", "/sandbox/calls").get("calls")
    if not isinstance(calls, list):
        raise CliError(f"the server at {api.url} did not list calls; is it a telcoflow sandbox?")
    if args.json:
        _print_json({"calls": calls})  # as the HTTP API has it
    elif not calls:
        print("no calls")
    else:
        print(_table(calls))
    return 0


def _hangup(api: SandboxApi, args: argparse.Namespace) -> int:
    call_id = _segment(args.call_id)
    before = api.call(args.call_id)
    if before.get("ended_reason") is not None or before.get("state") == "DISCONNECTED":
        raise CliError(
            f"call {args.call_id} has already ended ({before.get('ended_reason')}); nobody hung up"
        )
    if args.callee:
        call = api.json("POST", f"/sandbox/calls/{call_id}/callee/hangup")
    else:
        call = api.json("DELETE", f"/sandbox/calls/{call_id}")
    if args.json:
        _print_json(call)
    else:
        who = "callee" if args.callee else "caller"
        print(f"{who} hung up call {call_id}: {call['state']} ({call.get('ended_reason')})")
    return 0


def _recording(api: SandboxApi, args: argparse.Namespace) -> int:
    call_id = _segment(args.call_id)
    data = api.request("GET", f"/sandbox/calls/{call_id}/recording/{args.party}.wav").content
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, frames = w.getframerate(), w.getnframes()
    except (wave.Error, EOFError) as exc:
        raise CliError(f"the sandbox sent a recording that is not a WAV file ({exc})") from None
    path = args.output or f"{call_id}-{args.party}.wav"
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    seconds = frames / rate if rate else 0.0
    if args.json:
        _print_json(
            {
                "call_id": call_id,
                "party": args.party,
                "path": os.path.abspath(path),
                "seconds": round(seconds, 3),
                "sample_rate": rate,
                "bytes": len(data),
            }
        )
    else:
        print(
            f"saved what the {args.party} heard on {call_id} to {path}: "
            f"{seconds:.2f} s at {rate} Hz"
        )
    return 0


# --- wiring ---------------------------------------------------------------------------------------

Command = Callable[[SandboxApi, argparse.Namespace], int]


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with SandboxApi(args.url, args.ca, args.token) as api:
                return command(api, args)
        except CliError as exc:
            if getattr(args, "json", False):
                # Under --json, stdout is JSON whatever happens (the HTTP API's error shape).
                _print_json({"error": exc.message, "exit_code": exc.exit_code})
            else:
                print(f"telcoflow: {exc.message}", file=sys.stderr)
            return exc.exit_code

    return run


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``call``, ``calls``, ``hangup`` and ``recording`` to ``telcoflow sandbox``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or os.environ.get(BASE_URL_ENV) or DEFAULT_URL,
        help=f"the sandbox's address (default: ${URL_ENV}, else ${BASE_URL_ENV}, else "
        f"{DEFAULT_URL})",
    )
    common.add_argument(
        "--ca",
        metavar="FILE",
        default=os.environ.get(CA_ENV) or None,
        help=f"CA to trust for an https:// sandbox (default: ${CA_ENV})",
    )
    common.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the sandbox's admin token, if it requires one (default: ${TOKEN_ENV})",
    )
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")

    call = commands.add_parser(
        "call",
        parents=[common],
        help="place a simulated call",
        description="Place a simulated inbound call on a running sandbox; an agent connected "
        "to it is offered the call.",
    )
    call.add_argument(
        "--from",
        dest="from_number",
        default="+6590000001",
        metavar="NUMBER",
        help="the caller's number (%(default)s)",
    )
    call.add_argument(
        "--to",
        dest="to_number",
        metavar="NUMBER",
        help="the number called (default: the connector's own number)",
    )
    voice = call.add_mutually_exclusive_group()
    voice.add_argument("--tone", type=_hz, metavar="HZ", help="the caller says a tone (440 Hz)")
    voice.add_argument("--wav", metavar="FILE", help="the caller says a 16-bit PCM WAV file")
    voice.add_argument("--silence", action="store_true", help="the caller says nothing")
    call.add_argument("--once", action="store_true", help="play the WAV once instead of looping")
    call.add_argument(
        "--hangup-after",
        type=_seconds,
        metavar="S",
        help="the caller hangs up S seconds after the call is placed (never)",
    )
    callee = call.add_mutually_exclusive_group()
    callee.add_argument(
        "--callee-answer-after",
        type=_seconds,
        metavar="S",
        help="the callee answers S seconds after it starts ringing (1)",
    )
    callee.add_argument("--callee-no-answer", action="store_true", help="the callee never answers")
    callee.add_argument("--callee-decline", action="store_true", help="the callee declines")
    call.add_argument("--callee-tone", type=_hz, metavar="HZ", help="the callee's tone (880 Hz)")
    call.add_argument("--connector", metavar="UUID", help="connector to offer the call to")
    call.add_argument(
        "--follow",
        action="store_true",
        help="show the call's status until it ends, then a summary (Ctrl-C stops following)",
    )
    call.set_defaults(func=_runner(_call))

    calls = commands.add_parser("calls", parents=[common], help="list the sandbox's calls")
    calls.set_defaults(func=_runner(_calls))

    hangup = commands.add_parser(
        "hangup", parents=[common], help="hang up a call (as the caller, or the callee)"
    )
    hangup.add_argument("call_id", metavar="CALL_ID")
    hangup.add_argument("--callee", action="store_true", help="the callee hangs up instead")
    hangup.set_defaults(func=_runner(_hangup))

    recording = commands.add_parser(
        "recording", parents=[common], help="save what a party of a call heard as a WAV file"
    )
    recording.add_argument("call_id", metavar="CALL_ID")
    recording.add_argument("party", choices=("caller", "callee", "agent"))
    recording.add_argument(
        "-o", "--output", metavar="FILE", help="where to save it (default: CALL_ID-PARTY.wav)"
    )
    recording.set_defaults(func=_runner(_recording))
