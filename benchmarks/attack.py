"""Attack benchmark: every server-side attack of the hardening issue at once, against one sandbox
process, while 20 real-time echo calls run on it.

Each attack below was a defect of the sandbox, fixed since and provoked singly by
``tests/sandbox/test_hardening_sandbox.py`` (and ``tests/client/test_security.py``). A test
shows a defence holds alone; a sandbox that others depend on must also hold when they all come
together, while it keeps real time for the calls it carries. This script measures exactly
that, in three windows: *baseline* (calls only), *attack* (calls and every attack at once) and
*recovery* (calls only again). Per window it reports:

- the 20 calls' ``underrun_ms`` growth (sum, max, calls affected; ``GET /sandbox/calls``: playout
  time with the agent's buffer empty, a gap the caller heard), the share of real-time audio they
  echoed, and the media time the sandbox lost (``skipped_ms`` of the calls and ``skipped_ticks``
  of ``GET /sandbox/health``: its clock fell too far behind and skipped ahead);
- the event-loop lag of the sandbox and of the echo client (which one stalled, if calls underran),
  and the sandbox's CPU share;
- the sandbox process's RSS (``/proc/<pid>/status`` ``VmRSS``) at the end of the window and its
  maximum, next to the recordings it holds by design (every party of every call is recorded:
  that memory is expected to grow, about 48 KB/s per party at 24 kHz) and the WAV voices its
  calls keep, and RSS less both, which must come back; its open descriptors and connections; how
  slowly its HTTP API answered.

The attacks, each bounded in count and in time (the attack window), all started at once except
the connection flood, which starts part-way (``--flood-at``) so that the answers the other attacks
are owed on their own (408, the head timeout, ...) can be seen before it lets their connections
go as well:

1. ``--idle`` idle TCP connections and ``--slowloris`` sending a request head a byte a second,
   reopened when closed: each must be closed by the head timeout. Then the flood: the
   sandbox's connection limit plus ``--over-limit`` idle connections; a new agent must still get in
   (control connection, then a call with its media) while they are open.
2. ``--bodies`` request bodies declared 30 MB, a few KB sent, then stalled: 408 after the body
   timeout; bodies declared larger than the sandbox accepts: 413 unread.
3. ``--readers`` downloads of the calls' recordings by clients that never read: no copy of a
   recording per reader (RSS).
4. WAV caller voices whose header declares 1 Hz and 0 Hz: 400; an ordinary 5-minute 8 kHz WAV:
   201, answered by an echo agent (converted off the event loop while the calls run).
5. A ping flood (``--pings``, as fast as the socket takes them) on an authenticated control
   connection: every ping answered; an unauthenticated pipeline of ``--pipeline`` requests in one
   write, every ``--pipeline-every`` s: every one answered 401.
6. Bad HTTP every ``--bad-every`` s: huge JSON numbers, JSON nested 100,000 deep, a non-boolean
   ``silence``, malformed request lines and headers, WebSocket upgrades over HTTP/1.0 or with a
   bad ``Sec-WebSocket-Key``: 400 each.
7. A media token presented on another call's URL (``--token-rounds``): 401, and the token still
   works on its own call.

A connection the sandbox let go before its timeout (it evicts its oldest unidentified connections
for newcomers, by design) is counted as such: expected once the flood is on, a failure before it
for a request owed an answer. Processes: the sandbox
(``--sandbox-process``: this file, with a recording ``Sandbox`` and the limits given), the echo
agents (``client_ours.py``: this SDK, the README's echo loop), and this one, which places the
calls, attacks and measures (asyncio).

    python benchmarks/attack.py [--baseline 15 --attack 30 --recovery 15] [--json [FILE]]
    python benchmarks/attack.py --skip wav,flood     # which attack costs what: leave some out

Exit status 1 unless the calls kept real time, every attack got its expected answer, RSS (less
recordings and voices) came back within ``--max-rss-growth-mib`` and the sandbox was still up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import os
import platform
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import httpx
from _report import Probe, measure_lag
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, RejectConnection, Request, TextMessage

from telcoflow import (
    ActiveCall,
    BufferClosedError,
    TelcoflowClient,
    TelcoflowClientConfig,
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
    SetupDone,
)
from telcoflow._net import (
    ConnectFailed,
    ConnectionClosed,
    HandshakeRejected,
    WebSocketConnection,
    connect_websocket,
)
from telcoflow.audio import tone, write_wav
from telcoflow.sandbox import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, Connector, Limits, Sandbox

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTROL_PATH = "/v1/agent/session-manager"
#: The attacks (``--skip`` names them).
ATTACKS = (
    "idle",
    "slowloris",
    "flood",
    "late",
    "bodies",
    "readers",
    "wav",
    "pings",
    "pipeline",
    "bad",
    "token",
)
#: The sandbox's connectors besides the echo agents' (the default one): each attack that needs
#: credentials has its own, so that none of its calls reaches the echo agents.
ROLES = ("late", "thief", "flood")
#: A connection closed this much after its timeout was closed "at the timeout".
SLACK_S = 2.0
#: A connection closed this much before its timeout was let go early: evicted by the flood.
EARLY_S = 0.5
#: Connections the flood opens at once.
FLOOD_CONCURRENCY = 200
#: Pings per write of the ping flood (6 bytes each: about 60 KB a write).
PINGS_PER_WRITE = 10_000
#: The ping flood stops sending this long before the window ends, to collect the last pongs.
PING_DRAIN_S = 2.0
#: Attacks that report at their end finish this long before the window is cancelled.
END_MARGIN_S = 0.5
#: How long a bad request, a pipeline round or an orchestrator request may take to be answered.
ANSWER_TIMEOUT_S = 10.0
#: Attempts of one orchestrator request (the flood may let its idle keep-alive connection go).
API_ATTEMPTS = 5
#: A masked, empty ping (a zero mask is a valid mask) and the unmasked pong a server answers.
PING_FRAME = b"\x89\x80\x00\x00\x00\x00"
PONG_FRAME = b"\x8a\x00"

BROKEN = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

logger = logging.getLogger("attack")


# --- the sandbox process -------------------------------------------------------------------------


def recordings_bytes(sb: Sandbox) -> int:
    """Bytes of audio the sandbox holds in recordings (what is expected to grow)."""
    return sum(len(pcm) for call in sb.calls for pcm in call.recordings.values())


def voices_bytes(sb: Sandbox) -> int:
    """Bytes the sandbox holds in its calls' WAV voices: the file and each conversion of it
    (``Voice._converted``, private: read here only to account for memory)."""
    total = 0
    for call in sb.calls:
        for voice in (call.spec.caller, call.spec.callee.voice):
            if voice.wav is not None:
                total += len(voice.wav) + sum(len(pcm) for pcm in voice._converted.values())
    return total


async def serve_sandbox(args: argparse.Namespace) -> None:
    """The sandbox process: one ready line, then a window line on every SIGUSR1."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    extra = [Connector(f"{role}-{secrets.token_hex(8)}", str(uuid.uuid4())) for role in ROLES]
    connectors = [Connector(DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID), *extra]
    limits = Limits(
        head_timeout=args.head_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    probe = Probe()
    async with (
        Sandbox("127.0.0.1", 0, connectors=connectors, limits=limits) as sb,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(measure_lag, probe)
        ready = {
            "event": "ready",
            "host": sb.host,
            "port": sb.port,
            "base_url": sb.base_url,
            "http_url": sb.http_url,
            "connectors": {
                role: {"api_key": c.api_key, "connector_uuid": c.connector_uuid}
                for role, c in zip(("echo", *ROLES), sb.connectors, strict=True)
            },
        }
        print(json.dumps(ready), flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum != signal.SIGUSR1:
                    break
                window = {
                    "event": "window",
                    **probe.window(),
                    "recordings_bytes": recordings_bytes(sb),
                    "voices_bytes": voices_bytes(sb),
                    "tasks": len(asyncio.all_tasks()),
                    "threads": threading.active_count(),
                }
                print(json.dumps(window), flush=True)
        tg.cancel_scope.cancel()


# --- child processes and /proc --------------------------------------------------------------------


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_log(path: Path) -> IO[bytes]:
    return open(path, "wb")  # the caller closes it once the child holds its own copy


def log_problems(path: Path) -> list[str]:
    """The WARNING and ERROR lines (and tracebacks) of a child's log."""
    with open(path, errors="replace") as f:
        return [
            line.rstrip()
            for line in f
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")
        ]


class Child:
    """A child process printing one JSON object per line on stdout (``_report.py``'s lines)."""

    def __init__(self, name: str, process: anyio.abc.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self._send, self._lines = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

    @classmethod
    async def start(
        cls, name: str, argv: list[str], log_dir: Path, tg: anyio.abc.TaskGroup
    ) -> Child:
        log_path = log_dir / f"{name}.stderr"
        log = open_log(log_path)
        try:
            process = await anyio.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=HERE
            )
        finally:
            log.close()
        child = cls(name, process, log_path)
        tg.start_soon(child._read)
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and os.path.exists(f"/proc/{self.pid}")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffered = BufferedByteReceiveStream(self.process.stdout)
        async with self._send:
            while True:
                try:
                    line = await buffered.receive_until(b"\n", 1 << 20)
                except (anyio.IncompleteRead, *BROKEN):
                    return
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    await self._send.send(obj)

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line whose ``event`` is ``event``."""
        try:
            with anyio.fail_after(timeout):
                async for line in self._lines:
                    if line.get("event") == event:
                        return line
        except TimeoutError:
            pass
        raise RuntimeError(f"{self.name}: no {event!r} line; see {self.log_path}")

    async def window(self) -> dict[str, Any]:
        """The process's probe window (its event-loop lag since the last one), via SIGUSR1."""
        self.process.send_signal(signal.SIGUSR1)
        line = await self.expect("window", ANSWER_TIMEOUT_S)
        line.pop("event")
        return line

    async def stop(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """SIGTERM; the ``done`` line if it prints one; SIGKILL if it does not exit in time."""
        done = None
        if self.process.returncode is None:
            self.process.terminate()
        with anyio.move_on_after(timeout):
            try:
                done = await self.expect("done", timeout)
            except RuntimeError:
                pass
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        return done


# --- the sandbox's HTTP API, as the orchestrator uses it ----------------------------------------


class Api:
    """The sandbox's HTTP API. Every request is retried a few times: while the flood is on, the
    sandbox may let this client's idle keep-alive connection go (it evicts the oldest connections
    that have not identified themselves, by design); that costs a retry, not the run."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=ANSWER_TIMEOUT_S)
        self.requests = 0
        self.retries = 0
        self.failures = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        for attempt in range(API_ATTEMPTS):
            try:
                return await self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == API_ATTEMPTS - 1:
                    self.failures += 1
                    raise
                self.retries += 1
                await anyio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def json(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    async def calls(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        wanted = set(ids)
        listing = await self.json("GET", "/sandbox/calls")
        return {c["call_id"]: c for c in listing["calls"] if c["call_id"] in wanted}

    async def hang_up(self, call_id: str) -> None:
        try:
            await self.request("DELETE", f"/sandbox/calls/{call_id}")
        except httpx.TransportError:
            pass


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Sample:
    """The sandbox every ``--sample-every`` seconds."""

    t: float
    rss_kib: int
    fds: int
    connections_open: int | None
    evicted: int | None
    api_ms: float | None
    #: The echo calls' underrun so far, summed (None if the API did not answer).
    underrun_ms: int | None


@dataclass
class Snapshot:
    """Everything counted at a window's boundary."""

    t: float
    calls: dict[str, dict[str, Any]]
    health: dict[str, Any]
    rss_kib: int
    fds: int
    #: CPU seconds so far: the sandbox's, the echo client's, this process's.
    cpu_s: tuple[float, float, float]
    sandbox: dict[str, Any]
    agents: dict[str, Any]


class Sampler:
    def __init__(self, api: Api, sandbox: Child, ids: list[str], every: float) -> None:
        self.api = api
        self.sandbox = sandbox
        self.ids = ids
        self.every = every
        self.samples: list[Sample] = []

    async def run(self) -> None:
        while self.sandbox.alive:
            began = anyio.current_time()
            health: dict[str, Any] | None = None
            try:
                health = await self.api.json("GET", "/sandbox/health")
            except (httpx.HTTPError, RuntimeError):
                pass
            took = anyio.current_time() - began
            underrun = None
            try:
                calls = await self.api.calls(self.ids)
                underrun = sum(c["stats"]["underrun_ms"] for c in calls.values())
            except (httpx.HTTPError, RuntimeError):
                pass
            conns = health["connections"] if health else {}
            try:
                rss, fds = proc_rss_kib(self.sandbox.pid), proc_fds(self.sandbox.pid)
            except OSError:
                return
            self.samples.append(
                Sample(
                    began,
                    rss,
                    fds,
                    conns.get("open"),
                    conns.get("evicted"),
                    round(took * 1000, 1) if health else None,
                    underrun,
                )
            )
            await anyio.sleep(max(0.0, self.every - (anyio.current_time() - began)))

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]


async def snapshot(api: Api, sandbox: Child, agents: Child, ids: list[str]) -> Snapshot:
    t = anyio.current_time()
    calls = await api.calls(ids)
    health = await api.json("GET", "/sandbox/health")
    pid = sandbox.pid
    rss, fds = proc_rss_kib(pid), proc_fds(pid)
    cpu = (proc_cpu_s(pid), proc_cpu_s(agents.pid), proc_cpu_s(os.getpid()))
    return Snapshot(t, calls, health, rss, fds, cpu, await sandbox.window(), await agents.window())


def mib(kib_or_bytes: float, unit: int = 1024) -> float:
    return round(kib_or_bytes / unit, 1)


def a_total(snap: Snapshot, ids: list[str]) -> int:
    """The echo calls' underrun so far at ``snap``, summed."""
    return sum(snap.calls[i]["stats"]["underrun_ms"] for i in ids)


def summarize_window(
    name: str, a: Snapshot, b: Snapshot, samples: list[Sample], ids: list[str], rate: int
) -> dict[str, Any]:
    """What changed between two snapshots: the calls' counters, the sandbox's memory."""
    seconds = b.t - a.t

    def grew(key: str) -> list[int]:
        return [b.calls[i]["stats"][key] - a.calls[i]["stats"][key] for i in ids]

    underrun, skipped, echoed = (
        grew("underrun_ms"),
        grew("skipped_ms"),
        grew("agent_bytes_received"),
    )
    media_a, media_b = a.health["media"], b.health["media"]
    rss_max = max([b.rss_kib, *(s.rss_kib for s in samples)])
    recordings, voices = b.sandbox["recordings_bytes"], b.sandbox["voices_bytes"]
    cpu = [round(100 * (y - x) / seconds) for x, y in zip(a.cpu_s, b.cpu_s, strict=True)]
    # When the calls underran, to the sampling interval (seconds into the window: ms).
    timeline: dict[str, int] = {}
    last = a_total(a, ids)
    for s in samples:
        if s.underrun_ms is not None:
            if s.underrun_ms > last:
                timeline[f"{s.t - a.t:.0f}"] = s.underrun_ms - last
            last = s.underrun_ms
    if sum(underrun) + a_total(a, ids) > last:
        timeline[f"{seconds:.0f}"] = sum(underrun) + a_total(a, ids) - last
    api_ms = [s.api_ms for s in samples if s.api_ms is not None]
    conns = [s.connections_open for s in samples if s.connections_open is not None]
    return {
        "window": name,
        "seconds": round(seconds, 1),
        "underrun_ms_sum": sum(underrun),
        "underrun_ms_max": max(underrun),
        "calls_with_underrun": sum(1 for u in underrun if u > 0),
        "underrun_ms_per_call": underrun,
        "underrun_timeline": timeline,
        "echoed_pct": round(100 * sum(echoed) / (len(ids) * rate * 2 * seconds), 1),
        "calls_skipped_ms": sum(skipped),
        "health_skipped_ms": media_b["skipped_ms"] - media_a["skipped_ms"],
        "health_skipped_ticks": media_b["skipped_ticks"] - media_a["skipped_ticks"],
        "calls_answered_at_end": sum(1 for i in ids if b.calls[i]["state"] == "ANSWERED"),
        "sandbox_lag_max_ms": b.sandbox["lag_max_ms"],
        "sandbox_lags_over_frame": b.sandbox["lags_over_frame"],
        "sandbox_gc_max_ms": b.sandbox["gc_max_ms"],
        "client_lag_max_ms": b.agents["lag_max_ms"],
        "client_lags_over_frame": b.agents["lags_over_frame"],
        "sandbox_cpu_pct": cpu[0],
        "client_cpu_pct": cpu[1],
        "attacker_cpu_pct": cpu[2],
        "rss_mib_start": mib(a.rss_kib),
        "rss_mib_end": mib(b.rss_kib),
        "rss_mib_max": mib(rss_max),
        "recordings_mib_end": mib(recordings, 1 << 20),
        "voices_mib_end": mib(voices, 1 << 20),
        "rss_less_held_mib_end": mib(b.rss_kib - (recordings + voices) / 1024),
        "sandbox_tasks_end": b.sandbox["tasks"],
        "sandbox_threads_end": b.sandbox["threads"],
        "fds_end": b.fds,
        "fds_max": max([b.fds, *(s.fds for s in samples)]),
        "connections_open_max": max(conns, default=None),
        "connections_open_end": b.health["connections"]["open"],
        "evicted": b.health["connections"]["evicted"] - a.health["connections"]["evicted"],
        "refused": b.health["connections"]["refused"] - a.health["connections"]["refused"],
        "api_ms_max": max(api_ms, default=None),
        "api_samples": len(samples),
        "api_samples_failed": sum(1 for s in samples if s.api_ms is None),
    }


# --- attack results ------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """What one attack did and what the sandbox answered, counted by outcome."""

    name: str
    expected: str
    counts: Counter[str] = field(default_factory=Counter)
    #: Outcomes that are not the expected answer (a failure of the sandbox, or of this script).
    unexpected: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: str, ok: bool = True) -> None:
        self.counts[outcome] += 1
        if not ok and outcome not in self.unexpected:
            self.unexpected.append(outcome)

    def fact(self, key: str, add: float = 1) -> None:
        self.facts[key] = self.facts.get(key, 0) + add

    def error(self, exc: Exception) -> None:
        self.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1

    @property
    def ok(self) -> bool:
        return bool(self.counts) and not self.unexpected and not self.errors

    def observed(self) -> str:
        parts = [f"{n} {outcome}" for outcome, n in self.counts.most_common()]
        parts += [f"{key}: {value}" for key, value in self.facts.items()]
        parts += [f"{n}x error {text}" for text, n in self.errors.items()]
        return "; ".join(parts) or "nothing happened"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expected": self.expected,
            "counts": dict(self.counts),
            "unexpected": self.unexpected,
            "facts": self.facts,
            "errors": dict(self.errors),
            "ok": self.ok,
        }


def status_of(answer: bytes) -> str | None:
    """``"408"`` for an answer starting ``HTTP/1.1 408 ...``, None for no answer."""
    if not answer.startswith(b"HTTP/1."):
        return None if not answer else "garbage"
    return answer[9:12].decode("ascii", "replace")


def post(body: bytes, path: str = "/sandbox/calls") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def upgrade(version: bytes, key: bytes, api_key: str, connector_uuid: str) -> bytes:
    return (
        b"GET " + CONTROL_PATH.encode() + b" HTTP/" + version + b"\r\nhost: x\r\n"
        b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
        b"sec-websocket-key: " + key + b"\r\n"
        b"x-api-key: " + api_key.encode() + b"\r\n"
        b"x-connector-uuid: " + connector_uuid.encode() + b"\r\n\r\n"
    )


def bad_requests(api_key: str, connector_uuid: str) -> list[tuple[str, bytes, str]]:
    """(what, the request's bytes, the status expected) of attack 6, and the oversized bodies."""
    good_key = base64.b64encode(b"0123456789abcdef")
    return [
        (
            "JSON number of 5000 digits",
            post(b'{"caller_hangup_after_s": 1' + b"0" * 5000 + b"}"),
            "400",
        ),
        ("JSON number 1e400", post(b'{"caller_hangup_after_s": 1e400}'), "400"),
        ("tone_hz of 400 digits", post(b'{"caller": {"tone_hz": ' + b"9" * 400 + b"}}"), "400"),
        ("JSON nested 100,000 deep", post(b"[" * 100_000 + b"]" * 100_000), "400"),
        ('silence "yes"', post(b'{"caller": {"silence": "yes"}}'), "400"),
        ("silence 1", post(b'{"caller": {"silence": 1}}'), "400"),
        ("request line NONSENSE", b"NONSENSE\r\n\r\n", "400"),
        ("header without a colon", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        (
            "content-length -5",
            b"GET /sandbox/health HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
            "400",
        ),
        ("upgrade over HTTP/1.0", upgrade(b"1.0", good_key, api_key, connector_uuid), "400"),
        (
            "upgrade, key not base64",
            upgrade(b"1.1", b"not base64!", api_key, connector_uuid),
            "400",
        ),
        (
            "upgrade, key of 5 bytes",
            upgrade(b"1.1", base64.b64encode(b"short"), api_key, connector_uuid),
            "400",
        ),
        (
            "body declared 40 MB",
            b"POST /sandbox/calls HTTP/1.1\r\nhost: x\r\ncontent-length: 40000000\r\n\r\n",
            "413",
        ),
    ]


def wav_declaring(rate: int) -> bytes:
    """Half a second of 8 kHz audio whose header says ``rate`` Hz."""
    data = bytearray(write_wav(None, tone(440, 0.5, 8000), 8000))
    fmt = data.index(b"fmt ") + 8  # the fmt chunk's body: format, channels, rate, byte rate
    data[fmt + 4 : fmt + 8] = rate.to_bytes(4, "little")
    data[fmt + 8 : fmt + 12] = (rate * 2).to_bytes(4, "little")
    return bytes(data)


def five_minute_wav() -> bytes:
    """An ordinary 5-minute 8 kHz WAV (a 440 Hz tone: a whole number of cycles per second)."""
    return write_wav(None, tone(440, 1.0, 8000) * 300, 8000)


class Occurrences:
    """Counts a marker in a stream of chunks (a marker may straddle two of them)."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.seen = 0
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        self.seen += data.count(self.marker)
        self._carry = data[-(len(self.marker) - 1) :]


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's control frame (a zero mask)."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


class FrameScanner:
    """Counts the pongs in what the server sends and answers its heartbeat pings, without an
    object per frame: a ping flood's answers are hundreds of thousands of frames a second, and
    the attacker must stay cheaper than the sandbox it attacks (they share two cores)."""

    def __init__(self) -> None:
        self.pongs = 0
        self.closed = False
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Take bytes the server sent; returns the pongs owed to it."""
        buf = self._buf
        buf += data
        if buf.count(PONG_FRAME) * 2 == len(buf):  # only pongs (the usual case)
            self.pongs += len(buf) // 2
            buf.clear()
            return b""
        replies = bytearray()
        i, n = 0, len(buf)
        while n - i >= 2:
            opcode, length, head = buf[i] & 0x0F, buf[i + 1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i < head + length:
                break
            if opcode == 0xA:
                self.pongs += 1
            elif opcode == 0x9:
                replies += masked_frame(0xA, bytes(buf[i + head : i + head + length]))
            elif opcode == 0x8:
                self.closed = True
            i += head + length
        del buf[:i]
        return bytes(replies)


@dataclass
class SandboxInfo:
    host: str
    port: int
    base_url: str
    http_url: str
    connectors: dict[str, dict[str, str]]
    limit: int


class AttackWindow:
    """Every attack at once for ``--attack`` seconds (the flood from ``--flood-at`` of it)."""

    def __init__(
        self, args: argparse.Namespace, api: Api, info: SandboxInfo, echo_ids: list[str]
    ) -> None:
        self.args = args
        self.api = api
        self.info = info
        self.echo_ids = echo_ids
        self.flooding = False
        self.flood_open = anyio.Event()
        self.flood_target = info.limit + args.over_limit
        #: Calls placed by the attacks, hung up when the window ends.
        self.placed: list[str] = []
        self.t0 = self.stop_at = self.flood_began = 0.0
        creds = info.connectors["flood"]
        self.bad_kinds = bad_requests(creds["api_key"], creds["connector_uuid"])
        self.five_minutes = base64.b64encode(five_minute_wav()).decode()
        head, body = args.head_timeout, args.body_timeout
        self.results = {
            "idle": AttackResult(
                f"{args.idle} idle connections (reopened)",
                f"closed by the head timeout ({head:g} s), or earlier by the flood's evictions",
            ),
            "slowloris": AttackResult(
                f"{args.slowloris} slowloris, a head byte a second (reopened)",
                f"closed by the head timeout ({head:g} s), or earlier by the flood's evictions",
            ),
            "flood": AttackResult(
                f"flood: limit {info.limit} + {args.over_limit} idle connections",
                "all open at once; the sandbox lets the oldest unidentified ones go and holds "
                "no more than its limit",
            ),
            "late": AttackResult(
                "a new agent during the flood",
                "its control connection is up, and a call to it is answered with audio",
            ),
            "bodies": AttackResult(
                f"{args.bodies} bodies declared 30 MB, 4 KB sent (reopened)",
                f"408 at the body timeout ({body:g} s), or closed by the flood's evictions",
            ),
            "readers": AttackResult(
                f"{args.readers} recording downloads never read",
                "200 and stalled; no copy of a recording per reader (RSS)",
            ),
            "wav": AttackResult(
                "WAV voices: header 1 Hz, 0 Hz; a 5-minute 8 kHz WAV",
                "400 naming the rate, twice; 201 and answered by an echo agent",
            ),
            "pings": AttackResult(
                f"ping flood on a control connection (up to {args.pings:,})",
                "every ping answered with a pong",
            ),
            "pipeline": AttackResult(
                f"unauthenticated pipeline of {args.pipeline} requests in one write",
                "every request answered 401 (a round cut short by the flood's evictions is "
                "counted apart)",
            ),
            "bad": AttackResult(
                f"bad HTTP ({len(self.bad_kinds)} kinds per round)",
                "400 for each; 413 unread for a body declared 40 MB",
            ),
            "token": AttackResult(
                "a media token on another call's URL",
                "401; then the token still opens its own call's media",
            ),
        }
        for key in args.skip:
            self.results.pop(key, None)

    # --- helpers ---------------------------------------------------------------------------------

    def now(self) -> float:
        return anyio.current_time()

    async def connect(self) -> anyio.abc.SocketStream | None:
        try:
            return await anyio.connect_tcp(self.info.host, self.info.port)
        except OSError:
            return None

    async def exchange(self, request: bytes, timeout: float = math.inf) -> str:
        """Send ``request`` on a new connection and read until the sandbox closes it: the
        answer's status, ``"closed"`` (closed without one) or ``"no answer"`` (in time)."""
        stream = await self.connect()
        if stream is None:
            return "connect failed"
        answer = bytearray()
        async with stream:
            with anyio.move_on_after(timeout) as scope:
                try:
                    await stream.send(request)
                    while len(answer) < 65536:
                        answer += await stream.receive()
                except BROKEN:
                    pass
        status = status_of(bytes(answer))
        if status is not None:
            return status
        return "no answer" if scope.cancelled_caught else "closed"

    async def guarded(self, key: str, attack: Callable[[], Awaitable[None]]) -> None:
        """Run one attack; an error of its own is counted against it, and the others go on."""
        try:
            await attack()
        except Exception as exc:
            logger.exception("attack %s failed", key)
            self.results[key].error(exc)

    def reopen_limit(self, timeout: float) -> int:
        """How many connections one slot of a sustained attack opens at most."""
        attack: float = self.args.attack
        return max(1, math.ceil(attack / max(timeout, 0.5))) + 1

    # --- 1: idle, slowloris, the flood, a new agent ----------------------------------------------

    async def until_closed(self, stream: anyio.abc.SocketStream, drip: bool) -> str:
        """Wait (sending a byte of a request head a second if ``drip``) until the sandbox closes
        the connection: ``"closed"``, or ``"answered NNN"`` if it sent something first."""
        head = b"GET /sandbox/health HTTP/1.1\r\nhost: x\r\nx-slow: "
        sent = 0
        while True:
            with anyio.move_on_after(1.0 if drip else math.inf):
                try:
                    data = await stream.receive()
                except BROKEN:
                    return "closed"
                return f"answered {status_of(data)}"
            try:
                await stream.send(head[sent : sent + 1] or b"a")
            except BROKEN:
                return "closed"
            sent += 1

    async def idle_slot(
        self, key: str, drip: bool, reopen: bool, gate: anyio.Semaphore | None = None
    ) -> None:
        """One idle (or, with ``drip``, slowloris) connection at a time until the window ends,
        each classified by how long the sandbox let it live; ``gate`` bounds connects at once."""
        res = self.results[key]
        timeout = self.args.head_timeout
        for _ in range(self.reopen_limit(timeout) if reopen else 1):
            if self.now() >= self.stop_at:
                return
            connecting: AbstractAsyncContextManager[Any] = gate or nullcontext()
            async with connecting:
                stream = await self.connect()
            if stream is None:
                res.count("connect failed", ok=False)
                await anyio.sleep(1.0)
                continue
            opened = self.now()
            res.fact("opened")
            if key == "flood" and res.facts["opened"] == self.flood_target:
                res.facts["all open after s"] = round(opened - self.flood_began, 1)
                self.flood_open.set()
            outcome = "open"
            try:
                outcome = await self.until_closed(stream, drip)
            finally:
                age = self.now() - opened
                res.facts["longest held s"] = max(res.facts.get("longest held s", 0), round(age, 1))
                if outcome == "open":
                    late = age > timeout + SLACK_S
                    res.count("held past the timeout" if late else "open at the end", not late)
                elif outcome != "closed":
                    res.count(outcome, ok=False)
                elif age < timeout - EARLY_S:
                    res.count("closed early (evicted)")
                elif age <= timeout + SLACK_S:
                    res.count("closed at the head timeout")
                else:
                    res.count("closed late", ok=False)
                with anyio.CancelScope(shield=True):
                    await anyio.aclose_forcefully(stream)
            await anyio.sleep(0.5)  # as a client retrying would

    async def flood(self, tg: anyio.abc.TaskGroup) -> None:
        await anyio.sleep_until(self.t0 + self.args.attack * self.args.flood_at)
        self.flooding = True
        self.flood_began = self.now()
        gate = anyio.Semaphore(FLOOD_CONCURRENCY)  # connects at once; holding is not bounded
        slot = partial(self.idle_slot, "flood", False, False, gate)
        for _ in range(self.flood_target):
            tg.start_soon(self.guarded, "flood", slot)

    async def late_agent(self) -> None:
        """A new agent while the flood's connections are open: it connects, takes a call, and
        hears a second of the caller's audio."""
        res = self.results["late"]
        await anyio.sleep_until(self.t0 + self.args.attack * self.args.flood_at)
        with anyio.move_on_after(10):
            await self.flood_open.wait()
        if "flood" in self.results:
            opened = self.results["flood"].facts.get("opened", 0)
            res.facts["flood connections open first"] = opened
        creds = self.info.connectors["late"]
        heard = anyio.Event()
        wanted = self.args.sample_rate * 2  # one second of PCM16

        async def agent(call: ActiveCall) -> None:
            got = 0
            try:
                await call.answer()
                async for chunk in call.audio_stream():
                    got += len(chunk)
                    await call.send_audio(chunk)
                    if got >= wanted:
                        heard.set()
            except (BufferClosedError, WSSError):
                pass

        config = TelcoflowClientConfig.sandbox(
            api_key=creds["api_key"],
            connector_uuid=creds["connector_uuid"],
            base_url=self.info.base_url,
            sample_rate=self.args.sample_rate,
        )
        client = TelcoflowClient(config)
        client.on(events.INCOMING_CALL, agent)
        began = self.now()
        step = "control connection"
        try:
            with anyio.fail_after(25):
                async with client:
                    res.facts["connected after s"] = round(self.now() - began, 2)
                    res.count("control connection up")
                    step = "call with audio"
                    placed = self.now()
                    call = await self.api.json(
                        "POST",
                        "/sandbox/calls",
                        201,
                        json={
                            "connector_uuid": creds["connector_uuid"],
                            "caller_hangup_after_s": 30,
                        },
                    )
                    self.placed.append(call["call_id"])
                    await heard.wait()
                    res.facts["1 s of audio heard after s"] = round(self.now() - placed, 2)
                    res.count("call answered, 1 s of audio heard")
                    await self.api.hang_up(call["call_id"])
        except TimeoutError:
            res.count(f"{step}: not in time", ok=False)

    # --- 2: unfinished and oversized bodies ------------------------------------------------------

    async def unfinished_body(self) -> None:
        res = self.results["bodies"]
        request = (
            b"POST /sandbox/calls HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 30000000\r\n\r\n" + b'{"caller": {"wav_base64": "' + b"A" * 4096
        )
        timeout = self.args.body_timeout
        for _ in range(self.reopen_limit(timeout)):
            began = self.now()
            if began >= self.stop_at:
                return
            with anyio.move_on_after(self.stop_at - began) as scope:
                status = await self.exchange(request)
            age = self.now() - began
            if scope.cancelled_caught:
                late = age > timeout + SLACK_S
                res.count("no answer past the timeout" if late else "pending at the end", not late)
            elif status == "408":
                res.count("408 at the body timeout" if age >= timeout - EARLY_S else "408 early")
            elif status == "closed":
                res.count("closed without answer (evicted)", ok=self.flooding)
            else:
                res.count(f"answer: {status}", ok=False)
            await anyio.sleep(0.5)

    # --- 3: recordings never read ----------------------------------------------------------------

    async def stalled_download(self, path: str) -> None:
        res = self.results["readers"]
        stream = await self.connect()
        if stream is None:
            res.count("connect failed", ok=False)
            return
        try:
            await stream.send(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            await anyio.sleep_forever()  # and never read: the window's end stops it
        finally:
            res.count(*self.peek_answer(stream))
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)

    def peek_answer(self, stream: anyio.abc.SocketStream) -> tuple[str, bool]:
        """What the sandbox sent so far, seen without reading it (``MSG_PEEK``)."""
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        try:
            # A duplicate of the descriptor (closing it leaves the stream's own alone).
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
                head = sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return "no answer at all", False
        except OSError:
            return "reset (evicted)", self.flooding
        if not head:
            return "closed without answer (evicted)", self.flooding
        status = status_of(head)
        return ("200 sent, never read", True) if status == "200" else (f"answered {status}", False)

    # --- 4: WAV voices ---------------------------------------------------------------------------

    async def wav_voices(self) -> None:
        res = self.results["wav"]
        for rate in (1, 0):
            voice = base64.b64encode(wav_declaring(rate)).decode()
            response = await self.api.request(
                "POST", "/sandbox/calls", json={"caller": {"wav_base64": voice}}
            )
            named = f"{rate} Hz" in response.text
            ok = response.status_code == 400 and named
            res.count(f"{rate} Hz: {response.status_code}{' naming the rate' if named else ''}", ok)
        body = {
            "caller": {"wav_base64": self.five_minutes},
            "caller_hangup_after_s": self.args.attack + 30,
        }
        response = await self.api.request("POST", "/sandbox/calls", json=body)
        if response.status_code != 201:
            res.count(f"5-minute WAV: {response.status_code}", ok=False)
            return
        call_id = response.json()["call_id"]
        self.placed.append(call_id)
        res.count("5-minute WAV: 201")
        for _ in range(100):
            call = (await self.api.calls([call_id]))[call_id]
            if call["state"] == "ANSWERED":
                res.count("5-minute WAV: answered by an echo agent")
                return
            await anyio.sleep(0.2)
        res.count("5-minute WAV: not answered in 20 s", ok=False)

    # --- 5: a ping flood, an unauthenticated pipeline --------------------------------------------

    async def raw_control(self, role: str) -> anyio.abc.SocketStream:
        """A control connection set up by hand (wsproto), past ``setup.done``."""
        creds = self.info.connectors[role]
        ws = WSConnection(ConnectionType.CLIENT)
        setup = ControlProtocol(Role.CLIENT).send(Setup(sample_rate=self.args.sample_rate))
        headers = [
            (b"x-api-key", creds["api_key"].encode()),
            (b"x-connector-uuid", creds["connector_uuid"].encode()),
        ]
        request = Request(
            host=f"{self.info.host}:{self.info.port}", target=CONTROL_PATH, extra_headers=headers
        )
        stream = await anyio.connect_tcp(self.info.host, self.info.port)
        refused: int | None = None
        try:
            await stream.send(ws.send(request))
            with anyio.fail_after(ANSWER_TIMEOUT_S):
                while refused is None:
                    ws.receive_data(await stream.receive())
                    for event in ws.events():
                        if isinstance(event, RejectConnection):
                            refused = event.status_code
                        elif isinstance(event, AcceptConnection):
                            await stream.send(ws.send(Message(data=setup)))
                        elif isinstance(event, TextMessage):  # setup.done
                            return stream
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        await anyio.aclose_forcefully(stream)
        raise RuntimeError(f"control upgrade refused: {refused}")

    async def ping_flood(self) -> None:
        res = self.results["pings"]
        stream = await self.raw_control("flood")
        scanner = FrameScanner()
        caught_up = anyio.Event()
        sent = 0
        batch = PING_FRAME * PINGS_PER_WRITE

        async def read() -> None:
            try:
                while not scanner.closed:
                    replies = scanner.feed(await stream.receive(65536))
                    if replies:
                        await stream.send(replies)
                    if sending_done and scanner.pongs >= sent:
                        caught_up.set()
            except BROKEN:
                pass
            scanner.closed = True
            caught_up.set()

        sending_done = False
        async with stream, anyio.create_task_group() as tg:
            tg.start_soon(read)
            began = self.now()
            with anyio.move_on_after(max(0.0, self.stop_at - PING_DRAIN_S - began)):
                while sent < self.args.pings and not scanner.closed:
                    n = min(PINGS_PER_WRITE, self.args.pings - sent)
                    await stream.send(batch if n == PINGS_PER_WRITE else PING_FRAME * n)
                    sent += n
            sending_s = self.now() - began
            sending_done = True
            if scanner.pongs >= sent:
                caught_up.set()
            # The sandbox answers at its own pace: wait for it until just before the window ends
            # (the window's cancellation must not come first: it would lose the count).
            with anyio.move_on_after(max(PING_DRAIN_S, self.stop_at - END_MARGIN_S - self.now())):
                await caught_up.wait()
            answering_s = self.now() - began
            tg.cancel_scope.cancel()
        res.facts["pings sent"] = sent
        res.facts["pongs"] = scanner.pongs
        res.facts["sent in s"] = round(sending_s, 1)
        res.facts["answered in s" if scanner.pongs >= sent else "pongs for s"] = round(
            answering_s, 1
        )
        res.facts["pongs/s"] = round(scanner.pongs / max(answering_s, 1e-3))
        if scanner.pongs >= sent:
            res.count("every ping answered")
        elif scanner.closed:
            res.count("connection closed by the sandbox", ok=False)
        else:
            res.count(f"{sent - scanner.pongs} pings unanswered at the window's end", False)

    async def pipelines(self) -> None:
        res = self.results["pipeline"]
        n = self.args.pipeline
        requests = b"GET /public/v1/sessions HTTP/1.1\r\nhost: x\r\n\r\n" * n
        next_round = self.now()
        while next_round < self.stop_at - ANSWER_TIMEOUT_S / 2:
            await anyio.sleep_until(next_round)
            next_round += self.args.pipeline_every
            stream = await self.connect()
            if stream is None:
                res.count("connect failed", ok=False)
                continue
            answers, refusals = Occurrences(b"HTTP/1.1 "), Occurrences(b"HTTP/1.1 401 ")
            async with stream:
                with anyio.move_on_after(ANSWER_TIMEOUT_S) as scope:
                    try:
                        await stream.send(requests)
                        while answers.seen < n:
                            chunk = await stream.receive()
                            answers.feed(chunk)
                            refusals.feed(chunk)
                    except BROKEN:
                        pass
            got, refused = answers.seen, refusals.seen
            res.fact("requests answered", got)
            if refused < got:
                res.count("a status other than 401", ok=False)
            elif got >= n:
                res.count(f"all {n} answered 401")
            elif scope.cancelled_caught:
                res.count(f"not all answered in {ANSWER_TIMEOUT_S:g} s", ok=False)
            else:
                res.count("cut short (evicted)", ok=self.flooding)

    # --- 6: bad HTTP -----------------------------------------------------------------------------

    async def bad_http(self) -> None:
        res = self.results["bad"]

        async def one(what: str, request: bytes, expected: str) -> None:
            status = await self.exchange(request, ANSWER_TIMEOUT_S)
            if status == expected:
                res.count(f"{expected} as expected")
            elif status == "closed":
                res.count("closed without answer (evicted)", ok=self.flooding)
            else:
                res.count(f"{what}: {status}", ok=False)

        next_round = self.now()
        while next_round < self.stop_at - ANSWER_TIMEOUT_S / 2:
            await anyio.sleep_until(next_round)
            next_round += self.args.bad_every
            res.fact("rounds")
            async with anyio.create_task_group() as tg:
                for what, request, expected in self.bad_kinds:
                    tg.start_soon(one, what, request, expected)

    # --- 7: a media token on the wrong call's URL ------------------------------------------------

    async def token_rounds(self) -> None:
        res = self.results["token"]
        creds = self.info.connectors["thief"]
        conn = await connect_websocket(
            f"{self.info.base_url}{CONTROL_PATH}",
            headers=[
                ("x-api-key", creds["api_key"]),
                ("x-connector-uuid", creds["connector_uuid"]),
            ],
            name="thief",
        )
        proto = ControlProtocol(Role.CLIENT)
        send, inbox = anyio.create_memory_object_stream[object](math.inf)

        async def read() -> None:
            async with send:
                try:
                    while True:
                        await send.send(proto.receive(await conn.receive()))
                except ConnectionClosed:
                    pass

        async with anyio.create_task_group() as tg:
            await conn.send(proto.send(Setup(sample_rate=self.args.sample_rate)))
            tg.start_soon(read)
            with anyio.fail_after(ANSWER_TIMEOUT_S):
                async for msg in inbox:
                    if isinstance(msg, SetupDone):
                        break
            spacing = self.args.attack / self.args.token_rounds
            for k in range(self.args.token_rounds):
                await anyio.sleep_until(self.t0 + k * spacing)
                try:
                    res.count(*await self.token_round(conn, proto, inbox, creds["connector_uuid"]))
                except TimeoutError:
                    res.count(f"no call.in within {ANSWER_TIMEOUT_S:g} s", ok=False)
            tg.cancel_scope.cancel()
        await conn.aclose()

    async def token_round(
        self,
        conn: WebSocketConnection,
        proto: ControlProtocol,
        inbox: MemoryObjectReceiveStream[object],
        connector_uuid: str,
    ) -> tuple[str, bool]:
        """Two calls offered to the thief: the first's token on the second's URL, then on its
        own."""
        ids = []
        for _ in range(2):
            body = {"connector_uuid": connector_uuid, "caller_hangup_after_s": 30}
            ids.append((await self.api.json("POST", "/sandbox/calls", 201, json=body))["call_id"])
        self.placed += ids
        offers: dict[str, CallIn] = {}
        with anyio.fail_after(ANSWER_TIMEOUT_S):
            async for msg in inbox:
                if isinstance(msg, SessionNotify):
                    await conn.send(proto.send(SessionOpen(msg.session_id, proto.new_request_id())))
                elif isinstance(msg, RequestCompleted) and isinstance(msg.request, SessionOpen):
                    if msg.response.ok:
                        await conn.send(proto.send(SessionReady(msg.request.session_id)))
                elif isinstance(msg, CallIn) and msg.call_id in ids:
                    offers[msg.call_id] = msg
                    if len(offers) == 2:
                        break
        first, second = offers[ids[0]], offers[ids[1]]
        wrong = await self.media_attempt(second.url, first.token)
        own = await self.media_attempt(first.url, first.token)
        for call_id in ids:
            await self.api.hang_up(call_id)
        if wrong == 401 and own == 101:
            return "401 on the wrong URL, then accepted on its own", True
        return f"{wrong} on the wrong URL, then {own} on its own", False

    async def media_attempt(self, url: str, token: str) -> int:
        """The status of a media upgrade to ``url`` with ``token`` (101: accepted)."""
        try:
            conn = await connect_websocket(url, headers=[("authorization", f"Bearer {token}")])
        except HandshakeRejected as exc:
            return exc.status_code
        except ConnectFailed:
            return 0
        await conn.aclose()
        return 101

    # --- the window ------------------------------------------------------------------------------

    async def run(self) -> None:
        args = self.args
        self.t0 = self.now()
        self.stop_at = self.t0 + args.attack
        self.flood_began = self.stop_at
        recordings = [
            f"/sandbox/calls/{self.echo_ids[i % len(self.echo_ids)]}/recording/caller.wav"
            for i in range(args.readers)
        ]
        plan: dict[str, list[Callable[[], Awaitable[None]]]] = {
            "idle": [partial(self.idle_slot, "idle", False, True)] * args.idle,
            "slowloris": [partial(self.idle_slot, "slowloris", True, True)] * args.slowloris,
            "bodies": [self.unfinished_body] * args.bodies,
            "readers": [partial(self.stalled_download, path) for path in recordings],
            "wav": [self.wav_voices],
            "pings": [self.ping_flood],
            "pipeline": [self.pipelines],
            "bad": [self.bad_http],
            "token": [self.token_rounds],
            "late": [self.late_agent],
        }
        async with anyio.create_task_group() as tg:
            for key, attacks in plan.items():
                if key in self.results:
                    for attack in attacks:
                        tg.start_soon(self.guarded, key, attack)
            if "flood" in self.results:
                tg.start_soon(self.flood, tg)
            await anyio.sleep_until(self.stop_at)
            tg.cancel_scope.cancel()
        for call_id in self.placed:
            await self.api.hang_up(call_id)


# --- the run -------------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Thousands of sockets: the soft descriptor limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def check_memory(
    results: dict[str, AttackResult],
    windows: list[dict[str, Any]],
    per_recording: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The readers' expected answer (no copy of a recording per reader) and whether the
    sandbox's RSS, less what it holds by design (recordings, WAV voices), came back."""
    baseline, attack, recovery = windows
    before = baseline["rss_less_held_mib_end"]
    # The attack's maximum less what was held at its end (at most what was held then).
    during = round(
        attack["rss_mib_max"] - attack["recordings_mib_end"] - attack["voices_mib_end"], 1
    )
    after = recovery["rss_less_held_mib_end"]
    readers = results.get("readers")
    if readers is not None:
        copies = mib(args.readers * per_recording, 1 << 20)
        readers.facts["a copy per reader would be MiB"] = copies
        readers.facts["RSS less held grew MiB"] = round(during - before, 1)
        if during - before >= copies / 2:
            readers.count("RSS grew by half the copies or more", ok=False)
    return {
        "rss_less_held_mib": {"before": before, "during_max": during, "after": after},
        "growth_after_mib": round(after - before, 1),
        "returned": after - before <= args.max_rss_growth_mib,
    }


def sandbox_argv(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--sandbox-process",
        "--max-connections",
        str(args.max_connections),
        "--head-timeout",
        str(args.head_timeout),
        "--body-timeout",
        str(args.body_timeout),
    ]


def agents_argv(args: argparse.Namespace, info: SandboxInfo) -> list[str]:
    echo = info.connectors["echo"]
    return [
        sys.executable,
        str(HERE / "client_ours.py"),
        "--base-url",
        info.base_url,
        "--api-key",
        echo["api_key"],
        "--connector-uuid",
        echo["connector_uuid"],
        "--sample-rate",
        str(args.sample_rate),
        "--backend",
        "asyncio",
    ]


@asynccontextmanager
async def processes(
    args: argparse.Namespace, log_dir: Path
) -> AsyncIterator[tuple[Child, Child, SandboxInfo, dict[str, Any]]]:
    """The sandbox and the echo agents, started and (on exit) stopped; ``stopped`` gets what
    they said when stopped."""
    stopped: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        sandbox = await Child.start("sandbox", sandbox_argv(args), log_dir, tg)
        agents: Child | None = None
        try:
            ready = await sandbox.expect("ready", 30)
            info = SandboxInfo(
                ready["host"],
                ready["port"],
                ready["base_url"],
                ready["http_url"],
                ready["connectors"],
                args.max_connections,
            )
            agents = await Child.start("agents", agents_argv(args, info), log_dir, tg)
            await agents.expect("ready", 30)
            yield sandbox, agents, info, stopped
        finally:
            with anyio.CancelScope(shield=True):
                if agents is not None:
                    stopped["agents"] = await agents.stop()
                await sandbox.stop()
                stopped["sandbox_exit"] = sandbox.process.returncode
            tg.cancel_scope.cancel()


async def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    fd_limit = raise_fd_limit()
    load_before = os.getloadavg()
    hangup_after = args.settle + args.baseline + args.attack + args.recovery + 120
    async with processes(args, log_dir) as (sandbox, agents, info, stopped):
        api = Api(info.http_url)
        try:
            ids = []
            for _ in range(args.calls):
                body = {"caller": {"tone_hz": 440}, "caller_hangup_after_s": hangup_after}
                ids.append((await api.json("POST", "/sandbox/calls", 201, json=body))["call_id"])
                await anyio.sleep(1 / args.ramp)
            with anyio.fail_after(30):
                while True:
                    calls = await api.calls(ids)
                    if all(
                        c["state"] == "ANSWERED" and c["stats"]["agent_bytes_received"] > 0
                        for c in calls.values()
                    ):
                        break
                    await anyio.sleep(0.2)
            await anyio.sleep(args.settle)
            sampler = Sampler(api, sandbox, ids, args.sample_every)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler.run)
                snaps = [await snapshot(api, sandbox, agents, ids)]
                await anyio.sleep(args.baseline)
                snaps.append(await snapshot(api, sandbox, agents, ids))
                per_recording = snaps[-1].sandbox["recordings_bytes"] // (3 * len(ids))
                attacks = AttackWindow(args, api, info, ids)
                await attacks.run()
                snaps.append(await snapshot(api, sandbox, agents, ids))
                await anyio.sleep(args.recovery)
                snaps.append(await snapshot(api, sandbox, agents, ids))
                tg.cancel_scope.cancel()
            windows = [
                summarize_window(name, a, b, sampler.between(a.t, b.t), ids, args.sample_rate)
                for name, a, b in zip(
                    ("baseline", "attack", "recovery"), snaps, snaps[1:], strict=False
                )
            ]
            memory = check_memory(attacks.results, windows, per_recording, args)
            held = windows[1]["connections_open_max"]
            if "flood" in attacks.results:
                flood = attacks.results["flood"]
                flood.facts["most connections the sandbox held"] = held
                if held is not None and held > info.limit:
                    flood.count("the sandbox held more than its limit", ok=False)
            alive = sandbox.alive
            began = anyio.current_time()
            try:
                health = await api.request("GET", "/sandbox/health")
                final_status: int | None = health.status_code
            except httpx.HTTPError:
                final_status = None
            final_ms = round(1000 * (anyio.current_time() - began), 1)
            for call_id in ids:
                await api.hang_up(call_id)
        finally:
            await api.aclose()
    problems = log_problems(sandbox.log_path)
    attacks_ok = all(r.ok for r in attacks.results.values())
    kept_time = windows[1]["underrun_ms_sum"] == 0 and windows[1]["calls_skipped_ms"] == 0
    final = {
        "sandbox_alive": alive,
        "health_status": final_status,
        "health_ms": final_ms,
        "calls_still_answered": windows[2]["calls_answered_at_end"],
        "sandbox_exit_on_sigterm": stopped.get("sandbox_exit"),
        "agents_done": stopped.get("agents"),
        "sandbox_log_problems": len(problems),
        "sandbox_log_first_problems": problems[:10],
        "api_requests": api.requests,
        "api_retries": api.retries,
        "api_failures": api.failures,
    }
    up = alive and final_status == 200 and final["calls_still_answered"] == len(ids)
    return {
        "run": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "fd_limit": fd_limit,
            "log_dir": str(log_dir),
            "sandbox_pid": sandbox.pid,
            "recording_bytes_each_at_attack": per_recording,
            "options": {k: v for k, v in vars(args).items() if k != "sandbox_process"},
        },
        "windows": windows,
        "attacks": {key: r.to_json() for key, r in attacks.results.items()},
        "samples": [
            {**vars(sample), "t": round(sample.t - snaps[0].t, 2)} for sample in sampler.samples
        ],
        "memory": memory,
        "final": final,
        "verdict": {
            "calls_kept_real_time_under_attack": kept_time,
            "every_attack_answered_as_expected": attacks_ok,
            "rss_less_recordings_returned": memory["returned"],
            "sandbox_up_at_the_end": up,
        },
        "ok": kept_time and attacks_ok and memory["returned"] and up,
    }


# --- the report ----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> str:
    """The report as Markdown: the windows (calls, then the sandbox), the attacks, a verdict."""
    run_info, opts = report["run"], report["run"]["options"]
    windows = {w["window"]: w for w in report["windows"]}
    lines = [
        f"Attack benchmark, {run_info['started']}: {opts['calls']} echo calls at "
        f"{opts['sample_rate']} Hz (client_ours.py, asyncio) on one sandbox (pid "
        f"{run_info['sandbox_pid']}; max_connections {opts['max_connections']}, head timeout "
        f"{opts['head_timeout']:g} s, body timeout {opts['body_timeout']:g} s); "
        f"{run_info['cpus']} CPUs, Python {run_info['python']}, load before "
        f"{run_info['load_before'][0]}; skipped: {', '.join(opts['skip']) or 'none'}. "
        f"Logs: {run_info['log_dir']}",
        "",
        "| window | s | underrun ms: sum | max | calls | when (s into window: ms) | echoed % "
        "| media lost ms (skipped ticks) | loop lag max ms: sandbox / client "
        "| CPU %: sandbox / client / attacker |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in windows.values():
        when = ", ".join(f"{t}: {ms}" for t, ms in w["underrun_timeline"].items()) or "-"
        lines.append(
            f"| {w['window']} | {w['seconds']} | {w['underrun_ms_sum']} | {w['underrun_ms_max']} "
            f"| {w['calls_with_underrun']} | {when} | {w['echoed_pct']} "
            f"| {w['calls_skipped_ms']} ({w['health_skipped_ticks']}) "
            f"| {fmt(w['sandbox_lag_max_ms'])} / {fmt(w['client_lag_max_ms'])} "
            f"| {w['sandbox_cpu_pct']} / {w['client_cpu_pct']} / {w['attacker_cpu_pct']} |"
        )
    lines += [
        "",
        "| window | sandbox RSS MiB: end (max) | recordings MiB | WAV voices MiB "
        "| RSS less both MiB | tasks | fds max | connections max | evicted "
        "| health API ms max (failed/samples) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in windows.values():
        lines.append(
            f"| {w['window']} | {w['rss_mib_end']} ({w['rss_mib_max']}) "
            f"| {w['recordings_mib_end']} | {w['voices_mib_end']} | {w['rss_less_held_mib_end']} "
            f"| {w['sandbox_tasks_end']} | {w['fds_max']} | {fmt(w['connections_open_max'])} "
            f"| {w['evicted']} | {fmt(w['api_ms_max'])} "
            f"({w['api_samples_failed']}/{w['api_samples']}) |"
        )
    lines += ["", "| attack | expected | observed | ok |", "|---|---|---|---|"]
    for r in report["attacks"].values():
        observed = "; ".join(
            [f"{n} {outcome}" for outcome, n in sorted(r["counts"].items(), key=lambda x: -x[1])]
            + [f"{k}: {v}" for k, v in r["facts"].items()]
            + [f"{n}x error {e}" for e, n in r["errors"].items()]
        )
        mark = "yes" if r["ok"] else "**NO**: " + ", ".join(r["unexpected"] or list(r["errors"]))
        lines.append(f"| {r['name']} | {r['expected']} | {observed} | {mark} |")
    memory, final, verdict = report["memory"], report["final"], report["verdict"]
    base, attack, rec = windows["baseline"], windows["attack"], windows["recovery"]
    held = memory["rss_less_held_mib"]
    yes = {True: "yes", False: "NO"}
    lines += [
        "",
        f"- Calls under attack: underrun {attack['underrun_ms_sum']} ms on "
        f"{attack['calls_with_underrun']} of {opts['calls']} calls (max "
        f"{attack['underrun_ms_max']} ms), media lost {attack['calls_skipped_ms']} ms; baseline "
        f"{base['underrun_ms_sum']} ms, recovery {rec['underrun_ms_sum']} ms. Kept real time: "
        f"{yes[verdict['calls_kept_real_time_under_attack']]}.",
        f"- Sandbox RSS MiB before / during (max) / after: {base['rss_mib_end']} / "
        f"{attack['rss_mib_max']} / {rec['rss_mib_end']}; of which recordings "
        f"{base['recordings_mib_end']} / {attack['recordings_mib_end']} / "
        f"{rec['recordings_mib_end']} and WAV voices {base['voices_mib_end']} / "
        f"{attack['voices_mib_end']} / {rec['voices_mib_end']}; the rest {held['before']} / "
        f"{held['during_max']} / {held['after']} (after - before {memory['growth_after_mib']}, "
        f"allowed {opts['max_rss_growth_mib']:g}): came back: {yes[memory['returned']]}.",
        f"- At the end: sandbox alive {yes[final['sandbox_alive']]}, GET /sandbox/health "
        f"{fmt(final['health_status'])} in {final['health_ms']} ms, "
        f"{final['calls_still_answered']}/{opts['calls']} calls still up; exit code on SIGTERM "
        f"{fmt(final['sandbox_exit_on_sigterm'])}; orchestrator API requests "
        f"{final['api_requests']} ({final['api_retries']} retried, {final['api_failures']} "
        f"failed); sandbox log: {final['sandbox_log_problems']} warning/error lines.",
    ]
    lines += [f"  - {problem[:200]}" for problem in final["sandbox_log_first_problems"]]
    lines += [
        f"- Every attack answered as expected: "
        f"{yes[verdict['every_attack_answered_as_expected']]}.",
        "OK" if report["ok"] else "FAILED",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--sandbox-process", action="store_true", help=argparse.SUPPRESS)
    add("--calls", type=int, default=20, help="echo calls")
    add("--sample-rate", type=int, default=24000, choices=[8000, 16000, 24000])
    add("--ramp", type=float, default=10.0, help="calls placed per second")
    add("--settle", type=float, default=3.0, help="seconds after the last call is answered")
    add("--baseline", type=float, default=15.0, help="seconds of the baseline window")
    add("--attack", type=float, default=30.0, help="seconds of the attack window")
    add("--recovery", type=float, default=15.0, help="seconds of the recovery window")
    add("--sample-every", type=float, default=1.0, help="seconds between RSS/health samples")
    add("--max-connections", type=int, default=2000, help="the sandbox's connection limit")
    add("--head-timeout", type=float, default=10.0, help="the sandbox's head timeout (s)")
    add("--body-timeout", type=float, default=10.0, help="the sandbox's body timeout (s)")
    add("--idle", type=int, default=300, help="idle connections")
    add("--slowloris", type=int, default=300, help="slowloris connections")
    add("--over-limit", type=int, default=100, help="flood connections beyond the limit")
    add("--flood-at", type=float, default=0.5, help="share of the attack window before the flood")
    add("--bodies", type=int, default=20, help="unfinished 30 MB bodies")
    add("--readers", type=int, default=150, help="recording downloads never read")
    add("--pings", type=int, default=1_000_000, help="pings of the ping flood, at most")
    add("--pipeline", type=int, default=2000, help="requests per pipelined write")
    add("--pipeline-every", type=float, default=5.0, help="seconds between pipelined writes")
    add("--bad-every", type=float, default=2.0, help="seconds between rounds of bad requests")
    add("--token-rounds", type=int, default=3, help="wrong-URL token attempts")
    add("--max-rss-growth-mib", type=float, default=50.0, help="RSS less held, after - before")
    add(
        "--skip",
        type=lambda text: [k for k in text.split(",") if k],
        default=[],
        help=f"attacks not to run, comma-separated, of: {', '.join(ATTACKS)}",
    )
    add("--log-dir", help="where the processes' logs go (a new temporary directory)")
    add("--json", nargs="?", const="-", metavar="FILE", help="write JSON (- or no FILE: stdout)")
    args = parser.parse_args(argv)
    if not 0 <= args.flood_at < 1:
        parser.error("--flood-at must be in [0, 1)")
    unknown = set(args.skip) - set(ATTACKS)
    if unknown:
        parser.error(f"--skip: no attack {', '.join(sorted(unknown))}")
    if args.calls < 1 or args.token_rounds < 1:
        parser.error("--calls and --token-rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sandbox_process:
        anyio.run(serve_sandbox, args, backend="asyncio")
        return 0
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="telcoflow-attack-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=log_dir / "attack.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    report = anyio.run(run, args, log_dir, backend="asyncio")
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
