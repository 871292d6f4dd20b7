"""What the scenarios share: the sandbox as a subprocess, its HTTP API, audio analysis, bounded
waits, and a harness around the OFFICIAL client's ``SessionManager``.

Nothing here imports the project: in the virtual environment this suite runs in, ``telcoflow``
is the official 1.0.0 client from the package registry, used only through its documented API.
The sandbox is another process (the project's own interpreter, ``TELCOFLOW_SANDBOX_PYTHON``),
reached only over its sockets, exactly as the official client would reach the hosted service.

Every wait is bounded and fails the scenario when the bound passes: events the client reports
are awaited with a timeout, and the sandbox's state is polled (GET) until a condition holds or a
deadline passes. Nothing sleeps in the hope that something has happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import socket
import subprocess
import sys
import time
import wave
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from telcoflow import (
    AudioMode,
    Call,
    CallAudioConfig,
    ChannelType,
    CloseReason,
    SampleRate,
    Session,
    SessionManager,
    SessionManagerConfig,
    SessionNotification,
)
from telcoflow.exceptions import WSSSessionBusy

T = TypeVar("T")

# --- the sandbox process --------------------------------------------------------------------------

#: The project's interpreter when ``TELCOFLOW_SANDBOX_PYTHON`` is not set.
DEFAULT_SANDBOX_PYTHON = "/work/venv/bin/python"
#: ``python -m telcoflow`` does not work (the package has no ``__main__``), so the console
#: script's entry point is called directly: the same ``telcoflow sandbox serve`` command line.
SERVE_CODE = "import sys; from telcoflow._cli import main; sys.exit(main(sys.argv[1:]))"
#: How long the sandbox may take to answer ``GET /sandbox/health`` after it is started.
STARTUP_DEADLINE_S = 30.0


def sandbox_python() -> str:
    return os.environ.get("TELCOFLOW_SANDBOX_PYTHON") or DEFAULT_SANDBOX_PYTHON


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SandboxInfo:
    """A running sandbox: where it is and the default connector's credentials."""

    port: int
    api_key: str
    connector_uuid: str
    number: str
    log_path: Path
    #: Every connector, as ``GET /sandbox/health`` lists them (the default one first).
    connectors: list[dict[str, str]] = field(default_factory=list)

    def as_connector(self, api_key: str, connector_uuid: str) -> SandboxInfo:
        """The same sandbox, seen with another connector's credentials."""
        [entry] = [c for c in self.connectors if c["connector_uuid"] == connector_uuid]
        return SandboxInfo(
            self.port,
            api_key,
            connector_uuid,
            entry.get("number", ""),
            self.log_path,
            self.connectors,
        )

    @property
    def base_url(self) -> str:
        """The official client's ``base_url``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class SandboxProcess:
    """``telcoflow sandbox serve`` in a subprocess of the project's interpreter, on a free port;
    started once ``GET /sandbox/health`` answers, killed by :meth:`stop`."""

    def __init__(
        self, workdir: Path, *, python: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.python = python or sandbox_python()
        self.extra_args = extra_args
        self.workdir = workdir
        self.log_path = workdir / "sandbox.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: SandboxInfo | None = None

    def start(self) -> SandboxInfo:
        for _attempt in range(3):
            port = free_port()
            info = self._try(port)
            if info is not None:
                self.info = info
                return info
        raise RuntimeError(f"the sandbox found no free port; its log:\n{self.log_tail()}")

    def _try(self, port: int) -> SandboxInfo | None:
        argv = [self.python, "-c", SERVE_CODE, "sandbox", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(port), *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            # cwd is the test's own directory: nothing there shadows the installed project.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
            )
        url = f"http://127.0.0.1:{port}/sandbox/health"
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail:
                    return None  # someone took the port meanwhile: try another
                raise RuntimeError(
                    f"the sandbox exited with {self.proc.returncode} before answering "
                    f"{url} ({' '.join(argv)}); its log:\n{tail}"
                )
            try:
                response = httpx.get(url, timeout=1.0, trust_env=False)
                alive = self.proc.poll() is None  # ours answered, not another on the port
                if alive and response.status_code == 200 and response.json().get("status") == "ok":
                    connectors = response.json()["connectors"]
                    return SandboxInfo(
                        port=port,
                        api_key=connectors[0]["api_key"],
                        connector_uuid=connectors[0]["connector_uuid"],
                        number=connectors[0].get("number", ""),
                        log_path=self.log_path,
                        connectors=connectors,
                    )
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the sandbox did not answer {url} within {STARTUP_DEADLINE_S:g} s; "
                    f"its log:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # the poll interval of the health check

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- bounded waits --------------------------------------------------------------------------------

#: The default bound of a wait for something the sandbox or the client should do promptly.
WAIT_S = 10.0
#: How often the sandbox's state is polled while a scenario waits for a condition on it.
POLL_S = 0.05


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """``awaitable``'s result, or an assertion failure naming ``what`` after ``seconds``."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}") from None


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool],
    what: str,
    timeout: float = WAIT_S,
) -> T:
    """Fetch until ``predicate`` holds of the result; fail naming ``what`` (and the last result)
    once ``timeout`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await fetch()
        if predicate(last):
            return last
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {last!r}"
            )
        await asyncio.sleep(POLL_S)


#: The bound of one whole scenario (pytest-timeout's, in pytest.ini, is the backstop).
SCENARIO_S = 75.0


def async_test(
    fn: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an ``async def`` test in its own ``asyncio.run`` (the official client is asyncio-only),
    failing it when it takes longer than :data:`SCENARIO_S`."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            await within(fn(*args, **kwargs), SCENARIO_S, f"scenario {fn.__name__} to finish")

        asyncio.run(bounded())

    return run


# --- audio ----------------------------------------------------------------------------------------

#: The level (of full scale) above which a tone counts as present. The sandbox's tones and ours
#: play at a quarter of full scale; the leakage of one tone into another's Goertzel bin over a
#: 100 ms block is a few hundredths of that.
PRESENT = 0.06
BLOCK_S = 0.1


def _samples(pcm: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) & ~1])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def tone_pcm(freq_hz: float, rate: int, seconds: float, amplitude: float = 0.25) -> bytes:
    """``seconds`` of a sine tone as PCM16 little-endian mono at ``rate``."""
    n = int(rate * seconds)
    scale = amplitude * 32767
    step = 2 * math.pi * freq_hz / rate
    samples = array("h", (round(scale * math.sin(step * i)) for i in range(n)))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def goertzel_level(samples: array[int] | list[int], rate: int, freq_hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``freq_hz`` component of ``samples``: the Goertzel
    recurrence evaluated at that one frequency."""
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * freq_hz / rate)
    prev, prev2 = 0.0, 0.0
    for x in samples:
        prev, prev2 = x + coeff * prev - prev2, prev
    power = prev * prev + prev2 * prev2 - coeff * prev * prev2
    return 2.0 * math.sqrt(max(power, 0.0)) / n / 32768.0


@dataclass
class Audio:
    """PCM16 mono at ``rate``, analysed in :data:`BLOCK_S` blocks."""

    samples: array[int]
    rate: int

    @classmethod
    def from_pcm(cls, pcm: bytes, rate: int) -> Audio:
        return cls(_samples(pcm), rate)

    @classmethod
    def from_wav(cls, data: bytes) -> Audio:
        with wave.open(io.BytesIO(data), "rb") as w:
            assert w.getnchannels() == 1, "recordings are mono"
            assert w.getsampwidth() == 2, "recordings are PCM16"
            rate = w.getframerate()
            pcm = w.readframes(w.getnframes())
        return cls(_samples(pcm), rate)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def levels(
        self, freq_hz: float, start_s: float = 0.0, end_s: float | None = None
    ) -> list[float]:
        """The tone's level in each whole block of ``[start_s, end_s)``."""
        end = self.duration if end_s is None else min(end_s, self.duration)
        n = int(BLOCK_S * self.rate)
        first = max(0, int(start_s * self.rate))
        last = int(end * self.rate)
        return [
            goertzel_level(self.samples[i : i + n], self.rate, freq_hz)
            for i in range(first, last - n + 1, n)
        ]

    def presence(self, freq_hz: float, start_s: float = 0.0, end_s: float | None = None) -> float:
        """The fraction of the blocks of ``[start_s, end_s)`` in which the tone is present."""
        levels = self.levels(freq_hz, start_s, end_s)
        assert levels, f"no whole {BLOCK_S:g} s block in [{start_s:.2f}, {end_s}) s"
        return sum(level >= PRESENT for level in levels) / len(levels)

    def describe(self, freq_hz: float, start_s: float = 0.0, end_s: float | None = None) -> str:
        """The tone's levels over the window, for failure messages."""
        levels = self.levels(freq_hz, start_s, end_s)
        shown = " ".join(f"{level:.2f}" for level in levels)
        return (
            f"{freq_hz:g} Hz in [{start_s:.2f}, {end_s if end_s else self.duration:.2f}) s: {shown}"
        )

    def assert_heard(
        self, freq_hz: float, start_s: float, end_s: float, who: str, at_least: float = 0.8
    ) -> None:
        share = self.presence(freq_hz, start_s, end_s)
        assert share >= at_least, (
            f"{who} should have heard {freq_hz:g} Hz in [{start_s:.2f}, {end_s:.2f}) s of its "
            f"recording, but it is present in only {share:.0%} of it; "
            f"{self.describe(freq_hz, start_s, end_s)}"
        )

    def assert_not_heard(self, freq_hz: float, start_s: float, end_s: float, who: str) -> None:
        share = self.presence(freq_hz, start_s, end_s)
        assert share == 0.0, (
            f"{who} should not have heard {freq_hz:g} Hz in [{start_s:.2f}, {end_s:.2f}) s of "
            f"its recording, but it is present in {share:.0%} of it; "
            f"{self.describe(freq_hz, start_s, end_s)}"
        )


@dataclass
class Recording(Audio):
    """What one party of a sandbox call heard, on the call's timeline (sample 0 is the call's
    creation), with the wall-clock time of that origin to place client-side events on it."""

    origin: float = 0.0

    def at(self, wall_time: float) -> float:
        """Where ``wall_time`` (``time.time()``, this machine) falls on the recording."""
        return wall_time - self.origin


# --- the sandbox's HTTP API -----------------------------------------------------------------------


class SandboxApi:
    """The sandbox's HTTP API (SANDBOX.md) and the hosted service's REST plane, over httpx."""

    def __init__(self, info: SandboxInfo) -> None:
        self.info = info
        self._http = httpx.AsyncClient(base_url=info.http_url, timeout=10.0, trust_env=False)

    async def __aenter__(self) -> SandboxApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    @staticmethod
    def _json(response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, (
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, not {status}: {response.text}"
        )
        return response.json()

    async def place_call(self, body: dict[str, Any] | None = None) -> str:
        """``POST /sandbox/calls``; the new call's id."""
        created = self._json(await self._http.post("/sandbox/calls", json=body or {}), 201)
        assert created["state"] == "PENDING", created
        return str(created["call_id"])

    async def call(self, call_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(await self._http.get(f"/sandbox/calls/{call_id}"))
        return result

    async def calls(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(await self._http.get("/sandbox/calls"))["calls"]
        return result

    async def hangup(self, call_id: str) -> dict[str, Any]:
        """``DELETE /sandbox/calls/{id}``: the caller hangs up."""
        result: dict[str, Any] = self._json(await self._http.delete(f"/sandbox/calls/{call_id}"))
        return result

    async def hangup_callee(self, call_id: str) -> dict[str, Any]:
        """``POST /sandbox/calls/{id}/callee/hangup``: the callee hangs up."""
        path = f"/sandbox/calls/{call_id}/callee/hangup"
        result: dict[str, Any] = self._json(await self._http.post(path))
        return result

    async def fault(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(await self._http.post("/sandbox/faults", json=body))
        return result

    async def set_number(self, number: str, body: dict[str, Any]) -> None:
        self._json(await self._http.put(f"/sandbox/numbers/{number}", json=body))

    async def recording(self, call_id: str, party: str) -> Recording:
        """What ``party`` heard so far (``GET /sandbox/calls/{id}/recording/{party}.wav``)."""
        response = await self._http.get(f"/sandbox/calls/{call_id}/recording/{party}.wav")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("audio/"), response.headers
        audio = Audio.from_wav(response.content)
        origin = float((await self.call(call_id))["created_at"])
        return Recording(audio.samples, audio.rate, origin=origin)

    async def recording_until(self, call_id: str, party: str, wall_time: float) -> Recording:
        """``party``'s recording once it reaches ``wall_time`` (polled, bounded)."""

        async def fetch() -> Recording:
            return await self.recording(call_id, party)

        return await poll_until(
            fetch,
            lambda r: r.duration >= r.at(wall_time),
            f"the {party}'s recording of {call_id} to reach {wall_time:.2f}",
        )

    async def wait_call(
        self,
        call_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = WAIT_S,
    ) -> dict[str, Any]:
        """Poll ``GET /sandbox/calls/{id}`` until ``predicate`` holds of it."""
        return await poll_until(lambda: self.call(call_id), predicate, what, timeout)

    def credentials(self) -> dict[str, str]:
        return {"x-api-key": self.info.api_key, "x-connector-uuid": self.info.connector_uuid}

    async def rest_close(self, session_id: str) -> httpx.Response:
        """``POST /public/v1/sessions/{id}/close`` with the connector's credentials."""
        return await self._http.post(
            f"/public/v1/sessions/{session_id}/close", headers=self.credentials()
        )


# --- the official client --------------------------------------------------------------------------


@dataclass
class Handled:
    """A call the official client delivered (``on_incoming_call``), with what it reported."""

    call: Call
    session: Session
    notification: SessionNotification | None
    terminated: asyncio.Event
    closed: asyncio.Future[CloseReason]
    received: bytearray = field(default_factory=bytearray)

    async def wait_terminated(self, timeout: float = WAIT_S) -> None:
        await within(self.terminated.wait(), timeout, f"on_terminated of call {self.call.id}")

    async def wait_closed(self, timeout: float = WAIT_S) -> CloseReason:
        what = f"on_closed of session {self.session.id}"
        return await within(asyncio.shield(self.closed), timeout, what)


OnCall = Callable[[Handled], Awaitable[None]]


class OfficialAgent:
    """One official ``SessionManager`` against the sandbox, written as its README says:
    ``on_session_notification`` → ``open_session`` → handlers → ``ready()``; each delivered call
    is recorded (and handed to ``on_call`` if given) and its events collected.

    ``claim=False`` makes it only listen to notifications.
    """

    def __init__(
        self,
        sandbox: SandboxInfo,
        *,
        sample_rate: SampleRate = 16000,
        audio_mode: AudioMode = AudioMode.MIXED,
        on_call: OnCall | None = None,
        claim: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.config = SessionManagerConfig.create(
            api_key=sandbox.api_key,
            connector_uuid=sandbox.connector_uuid,
            base_url=sandbox.base_url,
            call_audio=CallAudioConfig(sample_rate=sample_rate, audio_mode=audio_mode),
        )
        self.sample_rate = sample_rate
        self.on_call = on_call
        self.claim = claim
        self.sm = SessionManager(self.config)
        self.sm.on_session_notification(self._on_notification)
        self.notifications: list[SessionNotification] = []
        self.sessions: dict[str, Session] = {}
        self.busy: dict[str, WSSSessionBusy] = {}
        self.open_errors: dict[str, BaseException] = {}
        self.handled: list[Handled] = []
        self.close_reasons: dict[str, list[CloseReason]] = {}
        #: What ``on_call`` raised (the official client only logs a handler's exception).
        self.handler_errors: list[BaseException] = []
        self._calls: asyncio.Queue[Handled] = asyncio.Queue()
        self._change = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> OfficialAgent:
        await self.sm.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.sm.__aexit__(None, None, None)
        if exc_type is None and self.handler_errors:
            raise AssertionError(f"on_incoming_call raised: {self.handler_errors!r}")

    @property
    def id(self) -> str | None:
        """The control connection's ``smWsId`` (``setup.done``)."""
        return self.sm.id

    def _bump(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S
    ) -> None:
        """Until ``predicate()`` holds of what this agent was told (re-checked at each change)."""

        async def wait() -> None:
            while not predicate():
                await self._change.wait()

        await within(wait(), timeout, what)

    async def wait_id_change(self, old: str | None, timeout: float = WAIT_S) -> str:
        """The new ``smWsId`` after a reconnect (polled: the client reports no event for it)."""

        async def fetch() -> str | None:
            return self.sm.id

        new = await poll_until(fetch, lambda i: i is not None and i != old, "a new smWsId", timeout)
        assert new is not None
        return new

    async def next_call(self, timeout: float = WAIT_S) -> Handled:
        """The next call delivered to ``on_incoming_call``."""
        return await within(self._calls.get(), timeout, "on_incoming_call")

    async def _on_notification(self, noti: SessionNotification) -> None:
        self.notifications.append(noti)
        self._bump()
        if not self.claim:
            return
        try:
            session = await self.sm.open_session(noti.session_id)
        except WSSSessionBusy as exc:
            self.busy[noti.session_id] = exc
            self._bump()
            return
        except Exception as exc:
            self.open_errors[noti.session_id] = exc
            self._bump()
            return
        self._track(session, noti)
        await session.ready()

    def _track(self, session: Session, noti: SessionNotification | None) -> None:
        """Register the session's handlers (before ``ready()``, as the README requires)."""
        self.sessions[session.id] = session
        closed: asyncio.Future[CloseReason] = asyncio.get_running_loop().create_future()

        @session.on_closed
        def on_closed(reason: CloseReason) -> None:
            self.close_reasons.setdefault(session.id, []).append(reason)
            if not closed.done():
                closed.set_result(reason)
            self._bump()

        @session.on_incoming_call
        async def on_incoming_call(call: Call) -> None:
            terminated = asyncio.Event()

            @call.on_terminated
            def on_terminated() -> None:
                terminated.set()
                self._bump()

            handled = Handled(call, session, noti, terminated, closed)
            self.handled.append(handled)
            self._calls.put_nowait(handled)
            self._bump()
            if self.on_call is not None:
                try:
                    await self.on_call(handled)
                except Exception as exc:
                    self.handler_errors.append(exc)
                    raise

    async def dial(self, number: str) -> Session:
        """An outbound call: ``create_session(TELCO, number)``, handlers, ``ready()``."""
        session = await self.sm.create_session(ChannelType.TELCO, number)
        self._track(session, None)
        await session.ready()
        return session

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the scenario's, cancelled when the agent exits."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def collect_audio(handled: Handled) -> None:
    """Read the call's ``audio_stream()`` into ``handled.received`` until it ends."""
    async for chunk in handled.call.audio_stream():
        handled.received += chunk


def seconds_of(rate: int, seconds: float) -> int:
    """Bytes of PCM16 mono in ``seconds`` at ``rate``."""
    return int(rate * seconds) * 2
