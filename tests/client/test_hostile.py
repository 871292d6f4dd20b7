"""The live SDK against a hostile server (``tests/hostile_server.py``, protocol version 2):
garbage, wrong types, huge numbers, unknown ids, sessions and channels, hostile answers to the
client's claims, broken framing, floods and oversized messages on both connections.

What must hold whatever the server sends: nothing raises out of ``async with`` except on purpose;
commands succeed, fail with a ``WSSError`` or time out, and never hang; a connection that survives
garbage still works afterwards (a well-formed call or command after the garbage gets through: the
positive marker most tests end on); the client takes no call the server did not offer properly,
and loses none it took; inbound audio stays within ``audio_queue_chunks``; messages past
``MAX_MESSAGE_BYTES`` close the connection with 1009, and a call that loses its media connection
ends exactly once (``media_lost``) while the client goes on; bad frames are counted and logged at
WARNING only ``LOUD_BAD_FRAMES`` times per connection; no token or key is logged, at any level;
what the client sends stays well-formed; leaving the client leaves no task behind. Random barrages
are seeded: a failure names its seed, and the seed reproduces it.

The media plane decodes leniently, as the official client does (hosted-1.0.0.md section 3.7):
missing optional fields take defaults, ``success`` is a truth value, codes are any value made
text, ``call.terminated`` may lack its reason (and ends the call whatever its reason), audio of
any channel is accepted (channels the call does not read are counted in ``ignored_frames``, not
logged), odd-length audio is carried over and any frame of two bytes or more is audio. What still
counts as a protocol error (``stats.protocol_errors``) is what cannot be read at all: text that is
not a JSON object with a type, a ``data`` that is not an object, a ``command_response`` without
``success`` or a string ``command_id``, a ``call_event`` without ``event``, a grant past
``MAX_CREDIT_GRANT_BYTES``, binary frames under two bytes or past ``MAX_AUDIO_PAYLOAD_BYTES``.
"""

from __future__ import annotations

import gc
import logging
import random
import re
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sniffio

import telcoflow._net._streams
import telcoflow._net._websocket
import telcoflow._net._writer
from telcoflow import (
    ActiveCall,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSCallClosedError,
    WSSConnectionError,
    WSSError,
    events,
)
from telcoflow._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_ID_CHARS,
    MAX_URL_CHARS,
)
from telcoflow._net import LOUD_BAD_FRAMES, MAX_MESSAGE_BYTES, ConnectionClosed

from ..helpers import WAIT, live_task_names
from ..hostile_server import (
    CLAIM_POLICIES,
    NOT_A_STRING,
    OMIT,
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OTHER_CHANNEL,
    PLANES,
    SECRET_MARK,
    SENT,
    TRAPS,
    UNUSABLE_URLS,
    ControlSession,
    Frame,
    HostileServer,
    MediaSession,
    Offer,
    audio_flood,
    control_garbage,
    control_message,
    ending_media_frames,
    fatal_framing,
    fatal_media_frames,
    hostile_responder,
    media_garbage,
    message,
    open_hostile_server,
    random_control_frame,
    random_media_frame,
    raw_frame,
    secret_token,
)

pytestmark = pytest.mark.anyio

#: Commands wait this long for an answer: short, since the hostile server often sends none.
COMMAND_TIMEOUT = 0.5
#: Claims wait this long for their response (and for call.in): short, for the same reason.
REQUEST_TIMEOUT = 0.5

#: The random barrages: this many seeds of this many frames each (per backend).
SEEDS = range(20)
FRAMES_PER_SEED = 200

#: Close codes the client sends when it gives up on a connection (RFC 6455 section 7.4.1).
TOO_BIG, PROTOCOL_ERROR, INVALID_DATA = 1009, 1002, 1007

#: The API key of every client here: a secret, to look for in the logs.
API_KEY = f"key-{SECRET_MARK}-0123456789"

#: Loggers of the SDK (the client's are ``telcoflow_sdk.*``).
SDK_LOGGERS = ("telcoflow_sdk", "telcoflow")

#: What the client logs (at DEBUG) when an internal error of its tasks is dropped in favour of
#: an exception already leaving ``async with`` (``TelcoflowClient._exit_tasks``): an error all
#: the same.
HIDDEN_ERROR_LOG = "internal error hidden"

#: The message the connection layer logs a bad frame with (``telcoflow._net._link``).
BAD_FRAME_LOG = "%s: ignoring bad frame: %s"


# --- measuring what is left behind ----------------------------------------------------------------


def sdk_tasks() -> list[str]:
    """Live tasks running the SDK's code (both backends name a task ``module.qualname``)."""
    return sorted(n for n in live_task_names() if n.startswith("telcoflow."))


def count_tasks(qualname: str) -> int:
    """Live tasks of the SDK's function ``qualname`` (e.g. ``"TelcoflowClient._run_inbound"``)."""
    return sum(1 for n in live_task_names() if n.startswith("telcoflow.") and n.endswith(qualname))


#: Hostile inputs sent by each seed of :func:`test_random_barrage`, by backend and seed.
RANDOM_SENT: dict[tuple[str, int], int] = {}


class _Summary:
    """A pytest plugin that prints this module's figures in the terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line)


_SUMMARY = _Summary()


@pytest.fixture(scope="module", autouse=True)
def report_hostile_frames(request: pytest.FixtureRequest) -> Iterator[None]:
    """Count the hostile inputs this module sends and print the figure at the end of the run."""
    if not request.config.pluginmanager.is_registered(_SUMMARY):
        request.config.pluginmanager.register(_SUMMARY, "hostile-server-summary")
    before, planes_before = SENT.copy(), PLANES.copy()
    yield
    sent, planes = SENT - before, PLANES - planes_before
    total, flood = sum(sent.values()), sent["audio-flood"]
    _SUMMARY.lines.append(
        f"hostile server: {total} hostile inputs sent ({flood} of them well-formed audio in "
        f"floods nobody read, {total - flood} malformed or adversarial frames of {len(sent)} "
        f"kinds); by plane: control {planes['control']}, media {planes['media']}; random "
        f"barrages: {len(RANDOM_SENT)} runs, {sum(RANDOM_SENT.values())} inputs"
    )


class LogAudit(logging.Handler):
    """Every record of the SDK's loggers, at every level, checked as it is emitted: secrets
    (anything with :data:`SECRET_MARK`), errors, and warnings by message."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.levels: Counter[int] = Counter()
        self.leaks: list[str] = []
        self.errors: list[str] = []
        #: WARNING and above, by message template.
        self.warnings: Counter[str] = Counter()
        #: The text of every record at WARNING and above.
        self.warning_texts: list[str] = []
        #: Bad frames logged at WARNING and above, by connection name.
        self.loud_bad_frames: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.levels[record.levelno] += 1
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        if SECRET_MARK in text:
            self.leaks.append(f"{record.name} {record.levelname}: {text[:300]}")
        if record.levelno >= logging.WARNING:
            self.warnings[str(record.msg)] += 1
            self.warning_texts.append(text)
            if record.msg == BAD_FRAME_LOG and record.args:
                self.loud_bad_frames[str(record.args[0])] += 1  # type: ignore[index]
        if record.levelno >= logging.ERROR or str(record.msg).startswith(HIDDEN_ERROR_LOG):
            self.errors.append(text)


#: The audit of the test running (set by the :func:`audit` fixture).
_AUDIT: list[LogAudit] = []


@pytest.fixture(autouse=True)
def audit() -> Iterator[LogAudit]:
    """The SDK logs at DEBUG, into a :class:`LogAudit` (and pytest's report, as usual); at the
    end, no record held a secret and none was an ERROR (a handler or task that raised inside the
    SDK)."""
    handler = LogAudit()
    saved = []
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    _AUDIT[:] = [handler]
    try:
        yield handler
    finally:
        _AUDIT.clear()
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert handler.leaks == [], handler.leaks[:5]
    assert handler.errors == [], handler.errors[:5]


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` (what it watches has no event to wait on) until true, bounded."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


#: Where what the client holds is allocated: its code, and the libraries it runs on. Not the
#: test's server, nor pytest, nor the log records pytest keeps, nor the JSON decoder (both sides
#: decode; a client that kept its sessions would show in its own objects, their scopes, events
#: and waiters).
_THE_CLIENTS = [
    tracemalloc.Filter(True, pattern)
    for pattern in ("*/telcoflow/*", "*/anyio/*", "*/asyncio/*", "*/trio/*", "*/uuid.py")
]


def held_since(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the client between the snapshots and still held."""
    diff = after.filter_traces(_THE_CLIENTS).compare_to(
        before.filter_traces(_THE_CLIENTS), "filename"
    )
    return sum(stat.size_diff for stat in diff)


class LoopLag:
    """The longest the event loop went without running a ticker task, in wall-clock time and in
    CPU time of this thread. The latter is what the loop's own tasks spent: other processes on a
    loaded machine can stretch the first, not the second.

    ``cpu`` leaves out the cyclic garbage collector's time (``gc``, reported apart): a full
    collection scans every object of the test process (a whole test session's worth, the
    hostile server's and the log audit's included) and took 55-85 ms of this test's longest
    stall, and 0.2 s once in CI, whatever the client did; with the collector off the longest
    stall is under 10 ms."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.gc = 0.0
        self._gc_total = 0.0
        self._gc_started = 0.0

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self._gc_total += time.thread_time() - self._gc_started

    async def _tick(self) -> None:
        wall, cpu, in_gc = anyio.current_time(), time.thread_time(), self._gc_total
        while True:
            await anyio.sleep(0.005)
            now, now_cpu, now_gc = anyio.current_time(), time.thread_time(), self._gc_total
            self.wall = max(self.wall, now - wall)
            self.cpu = max(self.cpu, (now_cpu - cpu) - (now_gc - in_gc))
            self.gc = max(self.gc, now_gc - in_gc)
            wall, cpu, in_gc = now, now_cpu, now_gc

    def __repr__(self) -> str:
        return (
            f"{self.cpu:.3f} s of CPU besides the garbage collector's {self.gc:.3f} s "
            f"({self.wall:.3f} s of wall-clock time)"
        )


@asynccontextmanager
async def measuring_loop_lag() -> AsyncIterator[LoopLag]:
    lag = LoopLag()
    gc.callbacks.append(lag._on_gc)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag._tick)
            try:
                yield lag
            finally:
                tg.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(lag._on_gc)


# --- a client under test --------------------------------------------------------------------------


class Harness:
    """A client of a hostile server, with what it delivered: calls and their terminations."""

    def __init__(self, server: HostileServer, client: TelcoflowClient, audit: LogAudit) -> None:
        self.server = server
        self.client = client
        self.audit = audit
        self.calls: list[ActiveCall] = []
        self.terminated: dict[str, list[str]] = {}
        self.delivered: list[str] = []
        #: Calls the test offered properly: the only ones the client may deliver, once each.
        self.expected: set[str] = set()
        self.once_each = True
        self._send, self._receive = anyio.create_memory_object_stream[ActiveCall](1000)
        client.on(events.INCOMING_CALL, self._incoming)

    def _incoming(self, call: ActiveCall) -> None:
        self.calls.append(call)
        self.delivered.append(call.call_id)
        reasons = self.terminated.setdefault(call.call_id, [])
        call.on(events.CALL_TERMINATED, reasons.append)
        self._send.send_nowait(call)

    async def next_call(self, call_id: str | None = None, timeout: float = WAIT) -> ActiveCall:
        """The next call delivered (of ``call_id``, if given: earlier ones are skipped)."""
        with anyio.fail_after(timeout):
            while True:
                call = await self._receive.receive()
                if call_id is None or call.call_id == call_id:
                    return call

    def active(self) -> int:
        return sum(c.is_active for c in self.calls)

    async def call_on(
        self, control: ControlSession, call_id: str | None = None, **options: Any
    ) -> tuple[ActiveCall, MediaSession]:
        """Offer a well-formed call; the client takes it and the server sees its media."""
        offer = self.server.new_offer(call_id, **options)
        self.expected.add(offer.call_id)
        await self.server.notify(control, offer)
        media = await self.server.next_media(offer.call_id)
        call = await self.next_call(offer.call_id)
        assert call.call_id == offer.call_id == media.call_id
        assert call.session_id == offer.session_id
        return call, media

    async def read_all(self, control: ControlSession) -> None:
        """Positive marker that the client has read everything sent on ``control`` so far: it
        answers a ping sent after it."""
        pong = await control.conn.ping(b"marker")
        with anyio.fail_after(WAIT):
            await pong.wait()

    async def given_up(self, control: ControlSession, offer: Offer) -> None:
        """Positive marker that the client is done with ``offer``'s session and will never
        deliver its call: notified of it anew (``RESUME``), it claims it again, which it does
        only for a session it does not hold (that claim is refused: SESSION_BUSY)."""
        offer.policy = "busy"
        claims = len(offer.claims)
        with anyio.fail_after(WAIT):
            while len(offer.claims) == claims:
                await self.server.notify(control, offer, "RESUME")
                await anyio.sleep(0.02)

    async def settled(self, control: ControlSession | None = None) -> None:
        """Positive marker that every session the client claimed is over but for its active
        calls: no claim is in flight, no media connection opening, no call undelivered. With
        ``control``, first that it has read everything sent there (and so started a task for
        every session it decided to claim)."""
        if control is not None:
            await self.read_all(control)
        await wait_until(lambda: count_tasks("TelcoflowClient._run_inbound") == self.active())

    async def wait_terminations(self, call_id: str, n: int = 1) -> list[str]:
        """The CALL_TERMINATED payloads of ``call_id`` once ``n`` have arrived and every event of
        every ended call has been dispatched (so that a duplicate would be there too)."""
        await wait_until(lambda: len(self.terminated.get(call_id, ())) >= n)
        await wait_until(lambda: count_tasks("CallEvents.dispatch") <= self.active())
        return self.terminated[call_id]

    def close(self) -> None:
        self._send.close()
        self._receive.close()


def make_config(server: HostileServer, **options: Any) -> TelcoflowClientConfig:
    options.setdefault("command_timeout", COMMAND_TIMEOUT)
    options.setdefault("request_timeout", REQUEST_TIMEOUT)
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("reconnect", {"initial_delay": 0.05, "max_delay": 0.2})
    options.setdefault("base_url", server.base_url)
    return TelcoflowClientConfig.sandbox(api_key=API_KEY, connector_uuid="c", **options)


def check_left_behind(h: Harness, seed: int) -> None:
    """What holds of any run, once the client has left: it took only calls offered properly,
    and sent the server nothing it could not read."""
    unexpected = [c for c in h.delivered if c not in h.expected]
    assert unexpected == [], f"seed {seed}: delivered calls never offered properly: {unexpected}"
    if h.once_each:
        assert len(set(h.delivered)) == len(h.delivered), f"seed {seed}: {h.delivered}"
    bad = [(c.sm_ws_id, c.bad_frames) for c in h.server.controls if c.bad_frames]
    bad += [(m.call_id, m.bad_frames) for m in h.server.media if m.bad_frames]
    assert bad == [], f"seed {seed}: the client sent frames the server could not read: {bad}"


@asynccontextmanager
async def hostile_client(seed: int = 0, **options: Any) -> AsyncIterator[Harness]:
    """A hostile server and a client of it. On the way out: the client raised nothing, took only
    calls offered properly, and neither the client nor the server left a task behind."""
    tasks_before = len(live_task_names())
    (audit,) = _AUDIT
    async with open_hostile_server(seed) as server:
        server.late_after = REQUEST_TIMEOUT * 1.5
        client = TelcoflowClient(make_config(server, **options))
        harness = Harness(server, client, audit)
        try:
            async with client:
                try:
                    yield harness
                except anyio.get_cancelled_exc_class():
                    # Nothing here cancels the test's own code (its timeouts raise TimeoutError):
                    # the client's task group did, because one of its tasks raised. The error
                    # itself is then hidden, and an enclosing task group would swallow this.
                    raise AssertionError(
                        f"seed {seed}: the client cancelled the test's code inside `async with` "
                        f"(an internal task raised: {audit.errors[-1:] or 'see the log'})"
                    ) from None
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"seed {seed}: raised inside the client: {exc!r}") from exc
        finally:
            harness.close()
        assert sdk_tasks() == [], f"seed {seed}: the client left tasks behind"
        assert client.calls == []
        check_left_behind(harness, seed)
    assert len(live_task_names()) == tasks_before, f"seed {seed}: tasks left behind"


async def command_outcome(coro: Any, timeout: float) -> str:
    """``"ok"`` or the name of the ``WSSError`` it raised; anything else, or a hang, fails."""
    with anyio.fail_after(timeout):
        try:
            await coro
        except WSSError as exc:
            return type(exc).__name__
    return "ok"


# --- control plane --------------------------------------------------------------------------------


async def test_control_garbage_is_ignored_and_later_offers_are_delivered() -> None:
    rng = random.Random(1)
    async with hostile_client(seed=1) as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        frames = control_garbage(
            rng, live_session_id=call.session_id, live_call_id=call.call_id, trap_url=h.server.url
        )
        assert await h.server.send(control, frames) == len(frames)
        second, _ = await h.call_on(control)  # the control connection still delivers offers
        assert second.call_id != call.call_id
        assert h.client.reconnects == 0
        assert len(h.server.controls) == 1
        assert not control.closed.is_set()
        # Every hostile claim played out (none in flight, none opening): no call but the two.
        await h.settled()
        assert h.delivered == [call.call_id, second.call_id]
        # The call notified, closed and given call.in again and again was never claimed twice,
        # nor opened twice, nor ended.
        assert h.server.claimed[call.session_id] == 1
        assert h.server.handshakes.count(f"/media/{call.call_id}") == 1
        assert call.is_active
        assert h.terminated[call.call_id] == []
        # What is not a call is never claimed; every hostile policy was claimed and answered.
        assert [s for s in h.server.claimed if s.startswith(OTHER_CHANNEL)] == []
        policies = {s.rsplit("~", 1)[1] for s in h.server.claimed if "~" in s}
        assert policies == set(CLAIM_POLICIES)
        # Hundreds of bad frames, a few warnings: the rest at DEBUG.
        assert h.audit.loud_bad_frames["control"] <= LOUD_BAD_FRAMES
        assert h.audit.warnings["%s: further bad frames are logged at DEBUG only"] == 1


async def test_duplicate_offers_for_a_live_or_opening_call_open_one_media_connection() -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        offer = h.server.new_offer("dup")
        h.expected.add("dup")
        offer.hold = True  # the claim waits for its answer: notifications meanwhile are repeats
        for activity in ("NEW_INCOMING_CALL", "RESUME") * 10:
            await h.server.notify(control, offer, activity)
        await wait_until(lambda: len(offer.claims) == 1)
        await h.read_all(control)
        assert len(offer.claims) == 1
        h.server.hold_media = anyio.Event()  # the media handshake waits: call.in repeats arrive
        await h.server.answer(offer)  # while the client is opening it
        await wait_until(lambda: "/media/dup" in h.server.handshakes)
        for _ in range(20):
            await h.server.send_call_in(control, offer)
            await h.server.notify(control, offer, "RESUME")
        await h.read_all(control)
        h.server.hold_media.set()
        media = await h.server.next_media()
        call = await h.next_call()
        for _ in range(20):  # once it is open
            await h.server.send_call_in(control, offer)
            await h.server.notify(control, offer)
        await h.read_all(control)
        await h.call_on(control)  # a different call still gets through
        assert call.call_id == media.call_id == "dup"
        assert len(offer.claims) == 1
        assert h.server.handshakes.count("/media/dup") == 1
        assert h.delivered.count("dup") == 1


async def test_two_sessions_naming_one_call_id_at_once_make_one_call() -> None:
    """A call id is live once: two sessions whose ``call.in`` name the same call id, their
    media handshakes in flight at the same time, make one call (the check that the id is not
    live already holds across the handshake)."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        h.expected.add("twin")
        h.server.hold_media = anyio.Event()  # both handshakes wait: both are opening at once
        for offer in (h.server.new_offer("twin"), h.server.new_offer("twin")):
            await h.server.notify(control, offer)
        await wait_until(lambda: h.server.handshakes.count("/media/twin") == 2)
        h.server.hold_media.set()
        call = await h.next_call("twin")
        await h.settled()  # the other session's task is over: it did not take the call
        await h.call_on(control)  # a different call still gets through
        assert h.delivered.count("twin") == 1
        assert h.client.get_call("twin") is call
        assert h.audit.warnings["call %s: a call with this id is already live; not taken"] == 1


def _before_setup_done_cases() -> list[Any]:
    notify = control_message("session.notify", {"sessionId": "s", "channel": "TELCO"})
    call_in = {"sessionId": "s", "callId": "c", "url": "ws://127.0.0.1:1/", "token": "t"}
    cases = [
        pytest.param([control_message("future.type", {})], None, True, id="unknown-type"),
        pytest.param(
            [control_message("future.type", {"n": i}) for i in range(2000)],
            None,
            True,
            id="unknown-type-flood",
        ),
        pytest.param(
            [Frame("raw-ping", raw_frame(OP_PING, b"p"), raw=True)] * 50, None, True, id="pings"
        ),
        pytest.param(
            [control_message("error", {"code": "X", "message": "m"})], None, False, id="error"
        ),
        pytest.param(["{"], None, False, id="not-json"),
        pytest.param([b"\x00\x01"], None, False, id="binary"),
        pytest.param(
            [control_message("session.notify", {"sessionId": 5})], None, False, id="bad-notify"
        ),
        # Well-formed, but nothing may come before setup.done: refused like a broken frame.
        pytest.param([notify], None, False, id="notify"),
        pytest.param(
            [control_message("response", {"reqId": "r", "ok": True})], None, False, id="response"
        ),
        pytest.param([control_message("call.in", call_in)], None, False, id="call.in"),
        pytest.param(
            [control_message("session.closed", {"sessionId": "s", "reason": "FORCE_CLOSE"})],
            None,
            False,
            id="session.closed",
        ),
    ]
    # setup.done itself, in every shape: a missing id is an empty one; a wrong type is refused.
    for value, enters, name in (
        (OMIT, True, "no-smWsId"),
        (None, True, "null-smWsId"),
        ("", True, "empty-smWsId"),
        ("\ud800", True, "surrogate-smWsId"),
        ("\U0001f600" * 5, True, "emoji-smWsId"),
        (5, False, "numeric-smWsId"),
        ([], False, "list-smWsId"),
        ("a" * (MAX_ID_CHARS + 1), False, "long-smWsId"),
    ):
        frame = control_message("setup.done", {"smWsId": value})
        cases.append(pytest.param([], [frame], enters, id=f"setup.done-{name}"))
    twice = [control_message("setup.done", {"smWsId": s}) for s in ("first", "second")]
    cases.append(pytest.param([], twice, True, id="setup.done-twice"))
    cases.append(pytest.param([], [], False, id="no-setup.done"))
    return cases


@pytest.mark.parametrize(("before", "setup_done", "enters"), _before_setup_done_cases())
async def test_frames_before_setup_done_enter_or_refuse_cleanly(
    before: list[Any], setup_done: list[str] | None, enters: bool
) -> None:
    """During setup an unknown type (or a ping) is ignored; a refusal, a broken frame or any
    session frame is the documented ``WSSConnectionError`` on entry, as is a setup.done that
    never comes (within the connect timeout), and nothing is left running."""

    def frame(item: Any) -> Frame:
        return item if isinstance(item, Frame) else Frame("before-setup.done", item)

    tasks_before = len(live_task_names())
    async with open_hostile_server() as server:
        server.before_setup_done = [frame(item) for item in before]
        if setup_done is not None:
            server.setup_done = [Frame("setup.done-variant", text) for text in setup_done]
        client = TelcoflowClient(make_config(server, connect_timeout=0.5))
        if enters:
            async with client:
                assert client.connected
                # ...and it works: a call is claimed on it.
                control = await server.next_control()
                offer = await server.offer(control)
                await wait_until(lambda: offer.readies == 1)
        else:
            with pytest.raises(WSSConnectionError):
                async with client:
                    pass
        assert sdk_tasks() == []
    assert len(live_task_names()) == tasks_before


@pytest.mark.parametrize("on_tls", ["hang-up", "garbage", "silent"])
async def test_a_wss_base_url_on_a_server_without_tls_is_a_connection_error(on_tls: str) -> None:
    """Found here: the peer hanging up in the TLS handshake raised ``anyio.EndOfStream`` out of
    ``async with`` instead of the documented ``WSSConnectionError``. The plain server hangs up,
    answers in plain HTTP, or says nothing (then the connect timeout ends it)."""
    async with open_hostile_server() as server:
        server.on_tls = on_tls
        config = make_config(
            server, base_url=server.base_url.replace("ws://", "wss://"), connect_timeout=0.5
        )
        with pytest.raises(WSSConnectionError):
            async with TelcoflowClient(config):
                pass
        assert server.tls_hellos == 1
        assert sdk_tasks() == []


async def test_oversized_control_message_closes_with_1009_and_the_client_reconnects() -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        big = Frame("oversized-text", control_message("x", {"pad": "a" * MAX_MESSAGE_BYTES}))
        await h.server.send(control, [big])
        with anyio.fail_after(WAIT):
            await control.closed.wait()
        assert control.close_code == TOO_BIG
        again = await h.server.next_control()  # the client came back on its own...
        second, _ = await h.call_on(again)  # ...and takes calls
        assert h.client.reconnects == 1
        assert call.is_active, "a control-plane outage does not end calls in progress"
        assert h.terminated[call.call_id] == []
        assert second.is_active


#: What the client does with each way of answering its claim, when the call.in that follows
#: (if any) names a media URL it can use: take the call, or not (and go on).
CLAIM_OUTCOMES = {
    "good": True,
    "busy": False,  # another process has it (DEBUG only)
    "busy-odd-content": False,
    "closed": False,
    "not-found": False,
    "odd-error": False,
    "odd-ok": True,  # ok is read as a truth value, as the official client reads it
    "falsy-ok": False,
    "odd-content": True,  # the content of a claim's response is not needed
    "silent": False,  # no call.in within request_timeout
    "closed-instead": False,
    "closed-first": False,  # the call ended before the claim was answered
    "early-call.in": True,  # before session.ready, against the protocol, but usable
    "no-answer": False,
    "late": False,  # the claim timed out; the late answer is ignored
    "wrong-reqId": False,
    "missing-reqId": False,
    "odd-reqId": False,
    "duplicate": True,  # the second answer is ignored
    "conflict": True,  # the first answer counts
    "response-flood": True,  # answers to requests never made are ignored
    "bad-call.in": False,  # the call.in is a bad frame; no call.in within request_timeout
    "odd-call.in": False,  # no media connection at that URL
    "two-call.in": False,  # the first call.in counts: a trap; the second is ignored
    "busy-then-call.in": False,  # not ours: its call.in is not for us
    "closed-then-call.in": False,  # the call ended before it was taken
}

#: Claim answers the client gets wrong (each has an xfail test of its own).
KNOWN_CLAIM_BUGS: set[str] = set()


async def test_claim_answers_each_have_a_documented_outcome() -> None:
    """Every hostile way of answering a claim, at once: each call is taken or not as
    :data:`CLAIM_OUTCOMES` says, none twice, and the client goes on taking calls."""
    assert set(CLAIM_OUTCOMES) == set(CLAIM_POLICIES)
    policies = [p for p in CLAIM_POLICIES if p not in KNOWN_CLAIM_BUGS]
    async with hostile_client() as h:
        control = await h.server.next_control()
        offers = {}
        for policy in policies:
            offer = await h.server.offer(control, policy=policy)
            offers[policy] = offer
            if CLAIM_OUTCOMES[policy]:
                h.expected.add(offer.call_id)
        await h.settled(control)
        taken = {policy: offer.call_id in h.delivered for policy, offer in offers.items()}
        assert taken == {p: CLAIM_OUTCOMES[p] for p in policies}
        for policy, offer in offers.items():
            assert len(offer.claims) == 1, policy
        await h.call_on(control)  # the client goes on
        assert h.client.reconnects == 0
        assert control.bad_frames == 0
        # Another process having the call is the normal course: no warning for it.
        for policy in ("busy", "busy-odd-content", "conflict"):
            named = re.compile(rf"\b{re.escape(offers[policy].session_id)}\b")
            assert [t for t in h.audit.warning_texts if named.search(t)] == [], policy


class Pad:
    """As a ``call.in`` URL: the usable one, padded (in its query) to ``size`` characters."""

    def __init__(self, size: int) -> None:
        self.size = size


class OwnToken(str):
    """As a ``call.in`` token: one the media server accepts for the call."""


async def test_a_call_in_after_its_session_closed_is_not_taken() -> None:
    """PROTOCOL.md: a ``session.closed`` for a session claimed but not yet connected means the
    call ended before it could be taken; a ``call.in`` the server sends after it (against the
    protocol) must not revive it, however soon it follows."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        offer = await h.server.offer(control, policy="closed-then-call.in")
        await wait_until(lambda: offer.readies == 1)
        await h.settled()
        call, _ = await h.call_on(control)  # the client goes on
        assert h.delivered == [call.call_id], f"{offer.call_id} was taken after its session closed"


def _call_in_cases() -> list[tuple[str, dict[str, object], bool]]:
    """(name, call.in field overrides, whether the call is taken)."""
    cases: list[tuple[str, dict[str, object], bool]] = [
        ("token-8KiB", {"token": OwnToken(secret_token(random.Random(1), MAX_URL_CHARS))}, True),
        ("token-over-8KiB", {"token": OwnToken(secret_token(random.Random(2), 8193))}, False),
        ("token-64KiB", {"token": OwnToken(secret_token(random.Random(3), 60_000))}, False),
        ("url-8KiB", {"url": Pad(MAX_URL_CHARS)}, True),
        ("url-over-8KiB", {"url": Pad(MAX_URL_CHARS + 1)}, False),
        ("no-from-to-org", {"from": OMIT, "to": OMIT, "orgUuid": OMIT}, True),
        ("null-from-to-org", {"from": None, "to": None, "orgUuid": None}, True),
        ("empty-token", {"token": ""}, False),  # refused by the media server: 401
        ("wrong-token", {"token": f"tok-{SECRET_MARK}-wrong"}, False),
        ("unknown-field", {"future": {"x": [1]}}, True),
    ]
    for key in ("sessionId", "callId", "url", "token"):
        cases.append((f"missing-{key}", {key: OMIT}, False))
        cases.append((f"null-{key}", {key: None}, False))
    for key in ("sessionId", "callId", "url", "token", "from", "to", "orgUuid"):
        for i, value in enumerate((5, True, [], {"a": 1})):
            cases.append((f"odd-{key}-{i}", {key: value}, False))
    for i, url in enumerate(UNUSABLE_URLS):
        cases.append((f"unusable-url-{i}", {"url": url}, False))
    return cases


async def test_call_in_fields_each_have_a_documented_outcome() -> None:
    """``call.in`` in every shape, each for a session the client claimed, all at once: URLs and
    tokens up to 8 KiB are taken (a hosted token is a JWT), longer ones, odd types, missing
    fields, unusable URLs and refused tokens are not, and the client goes on."""
    cases = _call_in_cases()
    async with hostile_client(connect_timeout=1.0) as h:
        control = await h.server.next_control()
        offers = {}
        for name, overrides, taken in cases:
            token = overrides.get("token")
            offer = h.server.new_offer(token=token if isinstance(token, OwnToken) else None)
            url = overrides.get("url")
            if isinstance(url, Pad):  # the usable URL, padded to that length
                base = offer.url + "?pad="
                overrides = {**overrides, "url": base + "p" * (url.size - len(base))}
            offer.call_in = overrides
            offers[name] = offer
            if taken:
                h.expected.add(offer.call_id)
            await h.server.notify(control, offer)
        await h.settled(control)
        outcome = {name: offers[name].call_id in h.delivered for name, _, _ in cases}
        assert outcome == {name: taken for name, _, taken in cases}
        by_id = {c.call_id: c for c in h.calls}
        quiet = by_id[offers["no-from-to-org"].call_id]
        assert (quiet.caller_number, quiet.callee_number, quiet.org_uuid) == ("", "", "")
        assert by_id[offers["token-8KiB"].call_id].is_active
        await h.call_on(control)  # the client goes on
        assert h.client.reconnects == 0


#: Why the invalid IPv6 literal crashes the client (found by the call.in barrage).


def _unreachable_offers() -> list[Any]:
    offers: list[Any] = [pytest.param({"media_url": f"@{path}"}, id=path) for path in TRAPS]
    offers += [
        pytest.param({"media_url": "ws://127.0.0.1:1/refused"}, id="refused"),
        pytest.param({"media_url": "http://127.0.0.1:1/"}, id="http-scheme"),
        pytest.param({"media_url": "ws:///no-host"}, id="no-host"),
        pytest.param({"media_url": "ws://no-such-host.invalid/"}, id="host-does-not-exist"),
        pytest.param({"media_url": "ws://" + "a" * 70 + ".invalid/"}, id="label-too-long"),
        pytest.param({"media_url": "ws://a\x00b/"}, id="nul-in-host"),
        pytest.param({"token": "a\r\nx-injected: 1"}, id="crlf-in-token"),
        pytest.param({"token": "\x00"}, id="nul-in-token"),
        # When this module was written, each of these crashed the client: a ValueError,
        # anyio.EndOfStream or UnicodeEncodeError escaped the task opening the media connection.
        pytest.param({"media_url": "ws://127.0.0.1:99999/"}, id="port-out-of-range"),
        pytest.param(
            {"media_url": "ws://[::1/bad-ipv6"},
            id="bad-ipv6-literal",
        ),
        pytest.param({"media_url": "wss@hang-up"}, id="tls-to-a-plain-server-that-closes"),
        pytest.param({"media_url": "wss@garbage"}, id="tls-to-a-plain-http-server"),
        pytest.param({"media_url": "wss@silent"}, id="tls-to-a-plain-server-that-says-nothing"),
        pytest.param({"token": "t\ud800"}, id="lone-surrogate-in-token"),
    ]
    return offers


@pytest.mark.parametrize("offer", _unreachable_offers())
async def test_offers_with_unusable_media_urls_are_dropped_and_the_client_goes_on(
    offer: dict[str, str],
) -> None:
    async with hostile_client(connect_timeout=0.5) as h:
        control = await h.server.next_control()
        url = offer.get("media_url")
        if url is not None and url.startswith("@"):
            url = h.server.url(url[1:])
        elif url is not None and url.startswith("wss@"):  # TLS to this plain server
            h.server.on_tls = url[4:]
            url = h.server.url("/media/unusable").replace("ws://", "wss://", 1)
        bad = await h.server.offer(control, "unusable", media_url=url, token=offer.get("token"))
        call, _ = await h.call_on(control)
        # The client gave the call up (past the connect timeout for /hang; the others fail, or
        # crashed the client, at once) and never delivered it.
        await h.given_up(control, bad)
        assert h.delivered == [call.call_id], f"{bad} must not be delivered"
        assert h.client.get_call(bad.call_id) is None
        assert h.client.reconnects == 0


async def test_offer_ended_while_its_media_connection_opens_is_never_delivered() -> None:
    async with hostile_client(connect_timeout=WAIT) as h:
        control = await h.server.next_control()
        bad = await h.server.offer(control, "ringing", media_url=h.server.url("/hang"))
        await wait_until(lambda: h.server.hangs_opened == 1)  # its media connection is opening
        await h.server.close_session(control, bad.session_id)
        await h.server.close_session(control, "never-notified", "FORCE_CLOSE")
        call, _ = await h.call_on(control)
        # The client gave the opening up at session.closed, long before its connect timeout.
        await wait_until(lambda: h.server.hangs_dropped == 1, timeout=WAIT / 2)
        await h.given_up(control, bad)
        assert h.delivered == [call.call_id]


async def test_session_closed_never_ends_a_connected_call() -> None:
    """The media plane is the authority on a call whose media is open: ``session.closed`` for
    it, of any reason and detail, is informational."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        reasons = ("CALL_TERMINATED", "FORCE_CLOSE", "SDK_REQUEST", "", "x", OMIT, *NOT_A_STRING)
        frames = [
            Frame(
                "session.closed-live",
                control_message(
                    "session.closed",
                    {"sessionId": call.session_id, "reason": reason, "detail": detail},
                ),
            )
            for reason in reasons
            for detail in (OMIT, None, "CALL_UNANSWERED", 5)
        ]
        await h.server.send(control, frames)
        await h.read_all(control)
        async with anyio.create_task_group() as tg:  # the call goes on: a command works
            tg.start_soon(call.answer)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True)
        assert call.state is CallState.ANSWERED
        assert h.terminated[call.call_id] == []
        await media.terminate("caller_hangup")  # and ends when the media plane says so, once
        assert await h.wait_terminations(call.call_id) == ["caller_hangup"]
        await h.call_on(control)


async def test_a_call_notified_to_two_clients_is_taken_by_one() -> None:
    """The hosted service notifies every connection of a connector; the first claim binds the
    session and the other gets SESSION_BUSY: one delivery, no warning, both clients go on."""
    tasks_before = len(live_task_names())
    (audit,) = _AUDIT
    async with open_hostile_server() as server:
        one, two = (TelcoflowClient(make_config(server)) for _ in range(2))
        async with one, two:
            harnesses = [Harness(server, client, audit) for client in (one, two)]
            controls = [await server.next_control(), await server.next_control()]
            for _ in range(3):
                offer = server.new_offer()
                for control in controls:
                    await server.notify(control, offer)

                def claimed_twice(offer: Offer = offer) -> bool:
                    return len(offer.claims) == 2

                def delivered_once(offer: Offer = offer) -> bool:
                    return sum(offer.call_id in h.delivered for h in harnesses) == 1

                await wait_until(claimed_twice)
                await server.next_media()
                await wait_until(delivered_once)
            await wait_until(
                lambda: (
                    count_tasks("TelcoflowClient._run_inbound")
                    == sum(h.active() for h in harnesses)
                )
            )
            assert sum(len(h.delivered) for h in harnesses) == 3
            assert audit.warnings["session %s: claim refused: %s"] == 0
            for h in harnesses:
                h.close()
        assert sdk_tasks() == []
    assert len(live_task_names()) == tasks_before


async def test_a_call_id_reused_by_another_session_does_not_orphan_the_live_call() -> None:
    """A server that gives two sessions one callId is broken; the client may take the second
    call or not, but must not lose track of the first: it stays in ``client.calls`` and
    ``get_call`` while it is active."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        again = h.server.new_offer(call.call_id)  # another session, the same call id
        h.once_each = False  # taking it is allowed; losing the first is not
        await h.server.notify(control, again)
        await wait_until(lambda: again.readies == 1)
        await h.settled()
        if h.delivered.count(call.call_id) == 2:
            media = h.server.media_sessions(call.call_id)[-1]
            await media.terminate("caller_hangup")  # the second call ends
            await wait_until(lambda: not h.calls[-1].is_active)
            await h.settled()
        assert call.is_active
        assert call in h.client.calls
        assert h.client.get_call(call.call_id) is call


async def test_an_internal_error_of_the_client_reaches_the_application(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever input finds a bug in the client, the bug must not vanish: the internal error
    comes out of ``async with`` (``_exit_tasks``'s own contract), not a cancellation of the
    application's code. A method of the client made to raise stands in for any such bug (the
    invalid IPv6 URL above is a real one)."""

    def broken(self: TelcoflowClient, msg: object) -> None:
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(TelcoflowClient, "_call_in", broken)
    outcome = "nothing"
    async with open_hostile_server() as server:
        try:
            async with TelcoflowClient(make_config(server)):
                control = await server.next_control()
                await server.offer(control)
                await anyio.sleep(WAIT)  # the call.in arrives meanwhile
        except RuntimeError:
            outcome = "raised"
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled the application's code"
        assert sdk_tasks() == []
    assert outcome == "raised"


async def test_control_floods_leave_the_client_responsive() -> None:
    """Tens of thousands of control frames in large writes (unknown types, bad frames, repeats
    of a live call's notification and close, raw pings): the event loop keeps turning, the bad
    frames are logged a few times only, and a call offered after them is delivered."""
    rng = random.Random(7)
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, _ = await h.call_on(control)
        notify = control_message(
            "session.notify",
            {"sessionId": call.session_id, "activity": "RESUME", "channel": "TELCO"},
        )
        closed = control_message(
            "session.closed", {"sessionId": call.session_id, "reason": "FORCE_CLOSE"}
        )
        kinds = [
            Frame("flood-unknown-type", control_message("future.type", {"n": 1})),
            Frame("flood-not-json", "{"),
            Frame("flood-binary", b"\x00\x01"),
            Frame("flood-notify-live", notify),
            Frame("flood-closed-live", closed),
            Frame(
                "flood-response-unknown", control_message("response", {"reqId": "r", "ok": True})
            ),
        ]
        frames = [rng.choice(kinds) for _ in range(30_000)]
        async with measuring_loop_lag() as lag:
            for i in range(0, len(frames), 500):
                await h.server.send(control, frames[i : i + 500], batch=500)
                if i % 5000 == 0:
                    pings = [Frame("flood-raw-ping", raw_frame(OP_PING, b"p"), raw=True)] * 20
                    await h.server.send(control, pings)
            second, _ = await h.call_on(control)
        assert lag.cpu < 0.2, f"the event loop stalled for {lag!r}"
        assert h.client.reconnects == 0
        assert call.is_active
        assert second.is_active
        assert h.server.claimed[call.session_id] == 1
        assert h.audit.loud_bad_frames["control"] <= LOUD_BAD_FRAMES


async def test_a_notify_flood_claims_no_more_than_max_calls() -> None:
    """Five hundred calls notified at once, their claims never answered: the client claims
    ``max_calls`` of them and leaves the rest aside; as those claims time out it claims the
    oldest of the others, never more than ``max_calls`` at once; once the calls end it forgets
    them and takes calls again."""
    async with hostile_client(max_calls=3) as h:
        control = await h.server.next_control()
        offers = [h.server.new_offer(policy="no-answer") for _ in range(500)]
        for offer in offers:
            await h.server.notify(control, offer)
        await wait_until(lambda: sum(len(o.claims) for o in offers) == 3)
        await h.read_all(control)  # every notification read: still only three claims
        assert [len(o.claims) for o in offers[:4]] == [1, 1, 1, 0]
        assert count_tasks("TelcoflowClient._run_inbound") == 3
        # The three time out (request_timeout): room again, for the oldest left aside.
        await wait_until(lambda: sum(len(o.claims) for o in offers) == 6)
        assert [len(o.claims) for o in offers[:7]] == [1, 1, 1, 1, 1, 1, 0]
        assert count_tasks("TelcoflowClient._run_inbound") <= 3
        for offer in offers:  # every caller hangs up: those left aside first, then the claimed
            if not offer.claims:
                await h.server.close_session(control, offer.session_id)
        await h.server.hang_up_all(control)
        await h.settled(control)
        claimed = sum(len(o.claims) for o in offers)
        await h.call_on(control)  # room again: the client takes calls
        assert sum(len(o.claims) for o in offers) == claimed, "no ended call claimed"


async def test_a_flood_of_refused_claims_leaves_nothing_behind() -> None:
    """A thousand calls notified at once, every claim refused: every claim is made and
    answered, nothing of them is left in the client, and the next call is delivered."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        offers = [h.server.new_offer(policy="busy") for _ in range(1000)]
        for name in SDK_LOGGERS:  # no records for pytest to keep (their arguments are ours)
            logging.getLogger(name).setLevel(logging.WARNING)
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for offer in offers:
                await h.server.notify(control, offer)
            await wait_until(lambda: all(o.claims for o in offers))
            await h.settled()
            held = held_since(before, tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        await h.call_on(control)
        # A session kept would be a kilobyte or so (its record, scope, events, waiter): 1 MB.
        # What is held is the runtimes' (trio prunes its deadline heap lazily; a dict keeps the
        # room it once needed): under 200 KB.
        assert held < 400_000, f"{held} bytes still held after 1000 refused claims"
        assert h.audit.warnings["session %s: claim refused: %s"] == 0


# --- media plane ----------------------------------------------------------------------------------


async def test_media_garbage_with_commands_in_flight_leaves_the_call_usable() -> None:
    rng = random.Random(2)
    async with hostile_client(seed=2) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.responder = hostile_responder(random.Random(3))
        outcomes: Counter[str] = Counter()
        stop = anyio.Event()

        async def commands() -> None:
            actions = [
                call.answer,
                call.whisper,
                call.barge,
                call.spy,
                call.clear_send_audio_buffer,
            ]
            while not stop.is_set():
                action = rng.choice(actions)
                outcomes[await command_outcome(action(), COMMAND_TIMEOUT + 2)] += 1

        frames = media_garbage(rng, media.command_ids)
        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(commands)
                for i in range(0, len(frames), 25):
                    await h.server.send(media, frames[i : i + 25], batch=5)
                    await anyio.sleep(0.002)
                stop.set()
        assert set(outcomes) <= {
            "ok",
            "WSSCallCommandError",
            "WSSCallCommandTimeoutError",
            "WSSCallClosedError",
        }, outcomes
        assert sum(outcomes.values()) > 0
        # The connection survived: a well-formed response to a real command resolves it.
        media.responder = None
        media.drop_pending_commands()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.barge)
            cmd = await media.next_command()
            assert cmd.command == "agent.barge"
            await media.respond(cmd.command_id, True)
        assert call.is_active
        assert call.stats.protocol_errors > LOUD_BAD_FRAMES
        assert call.stats.ignored_frames >= 253  # channels 3..255, once each, at least
        assert h.terminated[call.call_id] == []
        assert not media.closed.is_set()
        assert h.audit.loud_bad_frames[f"media {call.call_id}"] <= LOUD_BAD_FRAMES


async def test_hostile_command_responses_each_have_a_documented_outcome() -> None:
    async with hostile_client(command_timeout=0.2) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)

        async def answered_with(*frames: str) -> str:
            """Run ``whisper()``; answer it with ``frames`` (``{id}`` is its command id)."""
            result: list[str] = []

            async def run() -> None:
                result.append(await command_outcome(call.whisper(), 3.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                cmd = await media.next_command()
                for text in frames:
                    await h.server.send(
                        media, [Frame("response", text.replace("{id}", cmd.command_id))]
                    )
            return result[0]

        ok = '{"type":"command_response","data":{"command_id":"{id}","success":true}}'
        fail = (
            '{"type":"command_response","data":{"command_id":"{id}","success":false,'
            '"error_code":%s,"error_message":"m"}}'
        )
        timeout = "WSSCallCommandTimeoutError"
        assert await answered_with(ok) == "ok"
        assert await answered_with(ok, fail % '"INVALID_STATE"') == "ok"  # the duplicate: ignored
        assert await answered_with(fail % '"INVALID_STATE"', ok) == "WSSCallCommandError"
        assert await answered_with(fail % '"NEW_CODE"') == "WSSCallCommandError"
        assert await answered_with(fail % '"TIMEOUT"') == timeout
        # Lenient, as the official client: success is a truth value, codes any value made text.
        assert await answered_with(ok.replace("true", '"yes"')) == "ok"
        assert await answered_with(ok.replace("true", '"false"')) == "ok"  # a non-empty string
        assert await answered_with(ok.replace("true", "1")) == "ok"
        assert await answered_with(ok.replace("true", "0")) == "WSSCallCommandError"
        assert await answered_with(ok.replace("true", "null")) == "WSSCallCommandError"
        assert await answered_with(fail % "5") == "WSSCallCommandError"
        assert await answered_with(fail % '{"c":[1]}') == "WSSCallCommandError"
        assert await answered_with(fail % "null") == "WSSCallCommandError"
        assert await answered_with(ok.replace("true", 'true,"result":1e400')) == "ok"
        # No answer at all: no success, no such command, a command_id that is not a string,
        # data that is not an object.
        assert await answered_with(ok.replace(',"success":true', "")) == timeout
        assert await answered_with(ok.replace("{id}", "{id}x")) == timeout
        assert await answered_with(ok.replace('"{id}"', "10" + "0" * 400)) == timeout
        assert await answered_with('{"type":"command_response","data":"{id}"}') == timeout
        assert await answered_with() == timeout
        assert call.is_active
        assert await answered_with(fail % '"CALL_TERMINATED"') == "WSSCallClosedError"
        assert call.is_active  # the server's word on one command; the call ends by call.terminated
        await media.terminate("caller_hangup")
        assert await h.wait_terminations(call.call_id) == ["caller_hangup"]
        with pytest.raises(WSSCallClosedError):
            await call.whisper()


@pytest.mark.parametrize("mode", ["mixed", "isolated"])
async def test_audio_flood_nobody_reads_stays_within_audio_queue_chunks(mode: str) -> None:
    chunks = 100
    legs = {"mixed": CHANNEL_MIXED}
    if mode == "isolated":  # each leg apart, and what the agent hears mixed
        legs.update(caller=CHANNEL_CALLER, callee=CHANNEL_CALLEE)
    channels = list(legs.values())
    flood = 5000 // len(channels)  # frames per channel, nobody reading
    async with hostile_client(audio_mode=mode, audio_queue_chunks=chunks) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        frames = [f for channel in channels for f in audio_flood(flood, channel=channel)]
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for i in range(0, len(frames), 100):
                await h.server.send(media, frames[i : i + 100], batch=100)
            total = len(frames)
            await wait_until(lambda: call.stats.frames_received >= total)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        del frames
        queued = len(channels) * chunks
        assert call.stats.dropped_inbound_chunks == len(channels) * flood - queued
        # Unbounded, the flood would hold ~5 MB; bounded, ~0.1 MB per channel.
        assert peak < 2_000_000, f"peak {peak} bytes during the flood"
        assert call.is_active
        await media.terminate("caller_hangup")
        await h.wait_terminations(call.call_id)
        for leg, channel in legs.items():
            stream = call.audio_stream(leg)  # type: ignore[arg-type]
            kept = [int.from_bytes(chunk[:4], "big") async for chunk in stream]
            assert kept == list(range(flood - chunks, flood)), f"channel {channel}: drop-oldest"


@pytest.mark.parametrize("mode", ["mixed", "isolated"])
async def test_lenient_audio_decoding_counts_only_unusable_frames(mode: str) -> None:
    """Audio of any channel is accepted (what the call does not read is counted in
    ``ignored_frames``, quietly), a payload of one byte is audio, odd lengths are carried over
    into whole samples; only frames under two bytes or past the bound are protocol errors. The
    text frames of lenient decoding are no errors either; unreadable ones are."""
    isolated = mode == "isolated"
    async with hostile_client(audio_mode=mode) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        warnings = sum(h.audit.warnings.values())
        frames = [
            Frame("audio-empty", b""),  # error
            Frame("audio-1-byte", b"\x00"),  # error
            Frame("audio-1-payload-byte", b"\x00\x01"),  # audio: one byte kept for the next
            Frame("audio-odd-payload", b"\x00\x02\x03\x04"),  # audio: with it, two samples
            Frame("audio-unknown-channel", b"\x07" + bytes(960)),  # ignored
            Frame("audio-caller", b"\x01" + bytes(960)),  # the caller's leg
            Frame("audio-callee-odd", b"\x02\x05"),  # the callee's leg, one byte kept
            Frame("audio-over-bound", b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 2)),  # error
            Frame("audio-1-byte", b"\xff"),  # error
            Frame("grant-minimal", message("buffer_request", {"requested_bytes": 960})),
            Frame("grant-text-amount", message("buffer_request", {"requested_bytes": "960"})),
            Frame("error-message", message("call_event", {"event": "call.error", "message": "m"})),
            Frame("error-bare", message("call_event", {"event": "call.error"})),
            Frame(
                "response-minimal", message("command_response", {"command_id": "x", "success": 1})
            ),
            Frame("unknown-type", message("future", {})),
            Frame("unknown-event", message("call_event", {"event": "call.future"})),
            Frame("not-json", "{"),  # error
            Frame("no-event", message("call_event", {"reason": "x"})),  # error
        ]
        await h.server.send(media, frames)
        async with anyio.create_task_group() as tg:  # every frame before it has been read
            tg.start_soon(call.answer)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True)
        stats = call.stats
        assert stats.protocol_errors == 6, stats
        assert stats.ignored_frames == (1 if isolated else 3), stats
        assert stats.frames_received == (4 if isolated else 2), stats
        assert stats.bytes_received == (4 + 960 + 1 if isolated else 4), stats
        # Only the bad frames and the two error reports were logged at WARNING.
        logged = sum(h.audit.warnings.values()) - warnings
        assert logged == 6 + 2, h.audit.warnings
        with anyio.fail_after(WAIT):
            assert await anext(aiter(call.audio_stream("mixed"))) == b"\x01\x02\x03\x04"
            if isolated:
                assert await anext(aiter(call.audio_stream("caller"))) == bytes(960)
        assert call.is_active


@pytest.mark.parametrize(
    "kind",
    ["oversized-binary", "oversized-text", "oversized-fragmented", "too-many-fragments"],
)
async def test_oversized_media_message_closes_with_1009_and_ends_the_call_once(kind: str) -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        (frame,) = [f for f in fatal_media_frames(random.Random(0)) if f.kind == kind]
        if kind != "too-many-fragments":  # that one is small, in more fragments than allowed
            assert len(frame.payload) > MAX_MESSAGE_BYTES
        await h.server.send(media, [frame])
        assert await h.wait_terminations(call.call_id) == ["media_lost"]
        with anyio.fail_after(WAIT):
            await media.closed.wait()
        assert media.close_code == TOO_BIG
        assert call.state is CallState.DISCONNECTED
        assert h.client.get_call(call.call_id) is None
        second, _ = await h.call_on(control)  # the client goes on
        assert second.is_active


@pytest.mark.parametrize(
    "kind", [f.kind for f in fatal_framing(random.Random(0))] + ["abrupt-close", "clean-close"]
)
async def test_broken_media_framing_ends_the_call_once_as_media_lost(kind: str) -> None:
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        if kind == "abrupt-close":
            await media.conn.abort()
        elif kind == "clean-close":
            await media.conn.aclose(1000, "bye")  # without call.terminated first
        else:
            (frame,) = [f for f in fatal_framing(random.Random(0)) if f.kind == kind]
            await h.server.send(media, [frame])
        assert await h.wait_terminations(call.call_id) == ["media_lost"]
        with anyio.fail_after(WAIT):
            await media.closed.wait()
        if kind == "raw-invalid-utf8":
            assert media.close_code == INVALID_DATA
        elif kind.startswith("raw-"):
            assert media.close_code == PROTOCOL_ERROR
        second, _ = await h.call_on(control)
        assert second.is_active
        assert h.client.reconnects == 0


@pytest.mark.parametrize(
    ("frame", "expected"),
    [pytest.param(f, e, id=f"reason-{i}") for i, (f, e) in enumerate(ending_media_frames())],
)
async def test_call_terminated_of_any_reason_ends_the_call_once(
    frame: Frame, expected: str | None
) -> None:
    """``call.terminated`` ends the call whatever its reason (the official client ignores it):
    missing or empty it is "unknown", a string is kept (cut to MAX_ID_CHARS), anything else is
    made text."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        await h.server.send(media, [frame])
        (reason,) = await h.wait_terminations(call.call_id)
        if expected is None:
            assert isinstance(reason, str), reason
            assert 0 < len(reason) <= MAX_ID_CHARS, reason
            assert reason != "unknown"
        else:
            assert reason == expected
        assert call.termination_reason == reason
        assert h.client.get_call(call.call_id) is None
        assert call.stats.protocol_errors == 0
        second, _ = await h.call_on(control)
        assert second.is_active


@pytest.mark.parametrize("how", ["leave", "force_disconnect"])
async def test_ending_a_call_while_its_audio_streams_in_never_crashes_the_client(how: str) -> None:
    """Found here: audio that arrives as another task ends the call (leaving the client, or
    ``force_disconnect()``) hit the closed audio queue, and ``ClosedResourceError`` came out of
    ``async with TelcoflowClient``."""
    rng = random.Random(4)
    for attempt in range(15):
        async with hostile_client(seed=attempt) as h:
            control = await h.server.next_control()
            call, media = await h.call_on(control)
            h.server.start_soon(media.stream_audio)
            await anyio.sleep(rng.random() * 0.01)
            if how == "force_disconnect":
                await call.force_disconnect()
                assert await h.wait_terminations(call.call_id) == ["agent_force_disconnect"]


async def test_a_message_of_endless_empty_fragments_does_not_grow_memory() -> None:
    """Each empty continuation frame costs the server 2 bytes and carries no payload, so
    MAX_MESSAGE_BYTES never trips; the client must not keep something per fragment regardless."""
    fragments = 25_000
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        start = Frame("raw-fragment-start", raw_frame(OP_BINARY, b"", fin=False), raw=True)
        empties = Frame("raw-empty-fragments", raw_frame(OP_CONT, b"", fin=False) * 5_000, raw=True)
        end = Frame("raw-fragment-end", raw_frame(OP_CONT, b"\x00" * 961), raw=True)
        await h.server.send(media, [start])
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            await h.server.send(media, [empties] * (fragments // 5_000))
            try:
                # Answered once the client has read every fragment (or set when it closes).
                pong = await media.conn.ping(b"after the fragments")
                with anyio.fail_after(WAIT):
                    await pong.wait()
            except ConnectionClosed:
                pass
            held = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        await h.server.send(media, [end])
        if media.conn.closed is not None:  # the client refused the message: fine, if as too big
            with anyio.fail_after(WAIT):
                await media.closed.wait()
            assert media.close_code == TOO_BIG
            assert await h.wait_terminations(call.call_id) == ["media_lost"]
        else:
            assert held < 100_000, (
                f"the client holds {held} bytes for an unfinished message of {fragments} empty "
                f"fragments ({2 * fragments} bytes on the wire, no payload): it grows without "
                f"bound"
            )
            assert call.is_active


# --- random barrages ------------------------------------------------------------------------------


def ok_response(command_id: str) -> str:
    return message("command_response", {"command_id": command_id, "success": True})


ACTIONS = ("answer", "connect", "whisper", "barge", "spy", "interrupt", "send_audio", "buffer")


async def _act(call: ActiveCall, rng: random.Random) -> str:
    action = rng.choice(ACTIONS)
    if action == "connect":
        return await command_outcome(call.connect(ring_time_seconds=1), 1 + COMMAND_TIMEOUT + 2)
    if action == "interrupt":
        return await command_outcome(call.clear_send_audio_buffer(), COMMAND_TIMEOUT + 2)
    if action == "send_audio":
        pcm = bytes(rng.choice((2, 960, 9600, 480_000)))
        return await command_outcome(call.send_audio(pcm), 1.0)
    if action == "buffer":
        assert call.get_send_audio_buffer_size() >= 0
        await anyio.sleep(0.01)
        return "ok"
    return await command_outcome(getattr(call, action)(), COMMAND_TIMEOUT + 2)


#: What the client may answer a hostile server with; anything else fails the barrage.
ALLOWED_OUTCOMES = {
    "ok",
    "WSSCallCommandError",
    "WSSCallCommandTimeoutError",
    "WSSCallClosedError",
    "BufferFullError",
}


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_barrage(seed: int) -> None:
    rng = random.Random(seed)
    sent_before = sum(SENT.values())
    async with hostile_client(seed) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.responder = hostile_responder(random.Random(seed + 10_000))
        outcomes: Counter[str] = Counter()
        stop = anyio.Event()
        sent: list[Frame] = []

        idle = anyio.Event()

        async def activity() -> None:
            act_rng = random.Random(seed + 20_000)
            while not stop.is_set():
                outcomes[await _act(call, act_rng)] += 1
            idle.set()

        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(activity)
                for i in range(FRAMES_PER_SEED):
                    target: ControlSession | MediaSession
                    if rng.random() < 0.4:
                        frame = random_control_frame(
                            rng,
                            live_session_id=call.session_id,
                            live_call_id=call.call_id,
                            trap_url=h.server.url,
                        )
                        target = control
                    else:
                        frame = random_media_frame(rng, media.command_ids)
                        target = media
                    sent.append(frame)
                    if await h.server.send(target, [frame]) != 1:
                        pytest.fail(
                            f"seed {seed}: the client closed the {target.plane} connection "
                            f"({target.conn.closed}) after {len(sent)} frames; the last: "
                            f"{sent[-5:]!r}"
                        )
                    if rng.random() < 0.05:
                        burst = audio_flood(rng.randint(1, 300))
                        await h.server.send(media, burst, batch=50)
                    await anyio.sleep(0.002 if i % 10 == 0 else 0)
                stop.set()
                # Answer every command again, late: what the client waits for resolves now, and
                # the rest are responses to answered or timed-out commands.
                answered = 0
                while not idle.is_set():
                    late = [Frame("response-late", ok_response(c)) for c in media.command_ids]
                    await h.server.send(media, late[answered:], batch=20)
                    answered = len(late)
                    await anyio.sleep(0.01)
        assert set(outcomes) <= ALLOWED_OUTCOMES, f"seed {seed}: {outcomes}"
        # Every call the garbage notified hangs up: the client lets each go, at once.
        await h.server.hang_up_all(control)
        await h.settled()
        assert h.delivered == [call.call_id], f"seed {seed}"
        # Both connections survived: a well-formed answer to a real command resolves it...
        media.responder = None
        media.drop_pending_commands()
        assert call.is_active, f"seed {seed}: call ended ({call.termination_reason})"
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.spy)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True, result={"seed": seed})
        # ...and a well-formed offer is delivered, on the same control connection.
        second, _ = await h.call_on(control)
        assert h.client.reconnects == 0, f"seed {seed}"
        assert h.server.claimed[call.session_id] == 1, f"seed {seed}"
        assert h.server.handshakes.count(f"/media/{call.call_id}") == 1, f"seed {seed}"
        assert h.terminated[call.call_id] == [], f"seed {seed}"
        assert [s for s in h.server.claimed if s.startswith(OTHER_CHANNEL)] == [], f"seed {seed}"
        assert h.audit.loud_bad_frames["control"] <= LOUD_BAD_FRAMES, f"seed {seed}"
        assert h.audit.loud_bad_frames[f"media {call.call_id}"] <= LOUD_BAD_FRAMES, f"seed {seed}"
        # Finally something that ends the call: it ends exactly once, and the client goes on.
        endings: list[tuple[Frame, str | None]] = [
            *((f, "media_lost") for f in fatal_media_frames(rng)),
            *ending_media_frames(),
            (Frame("call.terminated", ""), "callee_hangup"),
        ]
        ending, expected = rng.choice(endings)
        if ending.kind == "call.terminated":
            await media.terminate("callee_hangup")
        else:
            await h.server.send(media, [ending])
        reasons = await h.wait_terminations(call.call_id)
        assert len(reasons) == 1, f"seed {seed}: {ending!r}: {reasons}"
        assert expected is None or reasons == [expected], f"seed {seed}: {ending!r}: {reasons}"
        assert second.is_active, f"seed {seed}"
    hostile = sum(SENT.values()) - sent_before
    assert hostile >= FRAMES_PER_SEED, f"seed {seed}: only {hostile} hostile frames sent"
    RANDOM_SENT[sniffio.current_async_library(), seed] = hostile
    print(f"seed {seed}: {hostile} hostile frames, client outcomes {dict(outcomes)}")


async def test_audio_payload_bound_is_what_the_codec_names() -> None:
    """The bounds the barrage aims at, for the record: a payload at MAX_AUDIO_PAYLOAD_BYTES is
    delivered, one sample more is dropped and counted, and neither ends the call."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        at = b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES)
        over = b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 2)
        await h.server.send(media, [Frame("audio-at-bound", at), Frame("audio-over-bound", over)])
        await h.server.send(media, [Frame("audio-valid", b"\x00" + bytes(960))])
        await wait_until(lambda: call.stats.frames_received >= 2)
        assert call.stats.protocol_errors == 1
        assert call.stats.bytes_received == MAX_AUDIO_PAYLOAD_BYTES + 960
        assert call.is_active
        # Text past the codec bound is refused the same way, not fatal.
        await h.server.send(media, [Frame("text-over-bound", message("x", {"p": "a" * 70_000}))])
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.answer)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True)
        assert call.state is CallState.ANSWERED
        assert call.stats.protocol_errors == 2


# --- a server that starves the client's writes ----------------------------------------------------


async def test_tiny_audio_frames_granted_by_the_server_do_not_freeze_the_client() -> None:
    """The codec accepts ``prefer_audio_frame_bytes`` down to 2; the client must not then cut four
    seconds of audio into 96,000 frames in one go, freezing every task of the process. The
    freeze is measured in CPU time of the event loop's thread, which a loaded machine does not
    stretch."""
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        grant = {"requested_bytes": 1 << 20, "prefer_audio_frame_bytes": 2, "channelId": 0}
        await h.server.send(
            media, [Frame("buffer_request-tiny-frames", message("buffer_request", grant))]
        )
        async with measuring_loop_lag() as lag:
            await anyio.sleep(0.05)
            await call.send_audio(bytes(4 * 48_000))  # four seconds at 24 kHz
            # Until it is all sent (at 50 frames a write: 1,920 writes).
            await wait_until(lambda: call.stats.bytes_sent >= 4 * 48_000)
        assert lag.cpu < 0.2, f"the event loop froze for {lag!r}"


async def test_a_command_honours_its_timeout_when_the_server_stops_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server grants credit and stops reading: the client's writes fill the socket. A command
    must still come back within its timeout, not the connection's write timeout (made a minute
    here, so that the two cannot be confused on a loaded machine; command_timeout is 0.5 s)."""
    monkeypatch.setattr(telcoflow._net._writer, "WRITE_TIMEOUT", 60.0)
    async with hostile_client() as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        media.pause_reading()
        grant = {"requested_bytes": 16 << 20, "prefer_audio_frame_bytes": 960, "channelId": 0}
        await h.server.send(media, [Frame("buffer_request", message("buffer_request", grant))] * 8)
        with anyio.fail_after(WAIT):
            stalled_since = anyio.current_time()
            last = -1
            while anyio.current_time() - stalled_since < 0.2:  # nothing sent for 200 ms
                if call.get_send_audio_buffer_size() == 0:
                    await call.send_audio(bytes(480_000))
                if call.stats.bytes_sent != last:
                    last, stalled_since = call.stats.bytes_sent, anyio.current_time()
                await anyio.sleep(0.01)
        started = anyio.current_time()
        with anyio.move_on_after(COMMAND_TIMEOUT + 3.0) as scope:
            outcome = await command_outcome(call.whisper(), WAIT * 2)
        waited = anyio.current_time() - started
        media.resume_reading()
        assert not scope.cancelled_caught, (
            f"whisper() with a {COMMAND_TIMEOUT} s timeout still blocked after {waited:.1f} s "
            f"(the client's writes stalled after {call.stats.bytes_sent} bytes)"
        )
        assert outcome in {"WSSCallCommandTimeoutError", "WSSCallClosedError"}


async def test_leaving_the_client_right_after_entering_is_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found here, on a well-behaved server: on trio, leaving ``async with`` at once took the
    whole close timeout (2 s) about half of the time. The close timeouts are made half a minute
    here, so that leaving that waits for one cannot pass for prompt on a loaded machine."""
    monkeypatch.setattr(telcoflow._net._websocket, "CLOSE_TIMEOUT", 30.0)
    monkeypatch.setattr(telcoflow._net._streams, "CLOSE_FLUSH_TIMEOUT", 30.0)
    async with open_hostile_server() as server:
        for attempt in range(20):
            async with TelcoflowClient(make_config(server)) as client:
                assert client.connected
                started = anyio.current_time()
            took = anyio.current_time() - started
            assert took < 5.0, f"attempt {attempt}: leaving took {took:.2f} s"
        assert sdk_tasks() == []


async def test_debug_logs_of_a_hostile_run_hold_no_secret(audit: LogAudit) -> None:
    """The audit (every test's) checks every record at DEBUG for tokens and the API key; this
    run makes sure there is plenty to check: calls taken, tokens refused, bad tokens in headers,
    call.in frames that are bad because of their token."""
    async with hostile_client(connect_timeout=0.5) as h:
        control = await h.server.next_control()
        call, media = await h.call_on(control)
        for token in (f"{SECRET_MARK}\r\nx: 1", f"{SECRET_MARK}\ud800", f"{SECRET_MARK}\x00"):
            bad = await h.server.offer(control, token=token)
            await h.given_up(control, bad)
        bad = await h.server.offer(control, policy="bad-call.in")
        await h.given_up(control, bad)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call.answer)
            cmd = await media.next_command()
            await media.respond(cmd.command_id, True)
    assert audit.levels[logging.DEBUG] > 0  # DEBUG really was on
