"""``TelcoflowClient``: the control connection, its reconnection, and the calls it delivers.

The client owns one task group. In it, a supervisor keeps the control connection alive (reading
offers, heartbeating, reconnecting with jittered backoff) and every offered call runs in its own
task group (see :mod:`telcoflow.call`). Leaving ``async with`` closes every active call (the agent
leaves), stops every task and closes every connection: nothing outlives the block.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from . import events
from ._core import (
    CallEnded,
    CallIncoming,
    CallState,
    ControlProtocol,
    ErrorMessage,
    ProtocolError,
    Role,
    Setup,
    SetupDone,
    UnknownMessage,
)
from ._handlers import HandlerRegistry
from ._net import (
    Backoff,
    ConnectFailed,
    ConnectionClosed,
    HandshakeRejected,
    WebSocketConnection,
    client_ssl_context,
    connect_websocket,
)
from ._version import __version__
from .call import ActiveCall
from .config import TelcoflowClientConfig
from .exceptions import WSSAuthenticationError, WSSConnectionError, WSSError, WSSMediaError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["IncomingCalls", "TelcoflowClient"]

logger = logging.getLogger("telcoflow.control_connection")

SDK_VERSION_HEADER = ("x-sdk-version", f"telcoflow-python/{__version__}")

#: On exit, how long each call gets to leave politely (``call.close``) before it is torn down.
LEAVE_TIMEOUT = 3.0

#: Media connections being opened at once at most; offers beyond are left to be offered again
#: (a server flooding offers at an address that never answers cannot pile up tasks and sockets).
MAX_OPENING_CALLS = 64

#: How long a call waits for calls offered before it to be handed to the application first.
HANDOFF_ORDER_WAIT = 0.5

#: Bad control frames logged at WARNING per connection; the rest at DEBUG.
LOUD_ERRORS = 10

#: Calls offered and not yet taken from :meth:`TelcoflowClient.incoming_calls`; past this the
#: consumer is not keeping up and further calls are released to be offered elsewhere.
MAX_PENDING_INCOMING = 1000


class IncomingCalls:
    """``async for call in client.incoming_calls():``, an alternative to the ``INCOMING_CALL``
    decorator. Ends when the client disconnects; calls the loop has not taken by then are left
    to the client's shutdown."""

    def __init__(self) -> None:
        self._calls: deque[ActiveCall] = deque()
        self._changed = anyio.Event()
        self._closed = False

    def _offer(self, call: ActiveCall) -> bool:
        if self._closed or len(self._calls) >= MAX_PENDING_INCOMING:
            return False
        self._calls.append(call)
        self._changed.set()
        return True

    def _close(self) -> None:
        self._closed = True
        self._changed.set()

    def __aiter__(self) -> IncomingCalls:
        return self

    async def __anext__(self) -> ActiveCall:
        while True:
            while self._calls:
                call = self._calls.popleft()
                if call.is_active:
                    return call
            if self._closed:
                raise StopAsyncIteration
            self._changed = anyio.Event()
            await self._changed.wait()


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a facade raises for an exception group of its internal tasks."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for leaf in leaves:
        if not isinstance(leaf, cancelled):
            return leaf
    return leaves[0]


class TelcoflowClient:
    """Takes the calls of one connector. Use as ``async with TelcoflowClient(config) as client``."""

    def __init__(self, config: TelcoflowClientConfig) -> None:
        if not isinstance(config, TelcoflowClientConfig):
            raise TypeError(f"config must be a TelcoflowClientConfig, not {type(config).__name__}")
        self.config = config
        self._handlers = HandlerRegistry((e.value for e in events.ClientEvent), "client")
        self._calls: dict[str, ActiveCall] = {}
        #: Calls whose tasks still run (an ended call's handler may still be finishing up).
        self._serving: set[ActiveCall] = set()
        self._opening: dict[str, anyio.CancelScope] = {}
        #: Calls offered and not yet handed to the application, in the order offered: media
        #: connections open concurrently, and a call waits for those offered before it.
        self._handoff: list[str] = []
        self._handoff_changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._control: WebSocketConnection | None = None
        self._supervisor: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._fatal: WSSError | None = None
        self._ssl: ssl.SSLContext | None = None
        self._control_proto = ControlProtocol(Role.CLIENT)
        self.connection_id: str | None = None
        self._iterators: list[IncomingCalls] = []
        self._draining = False
        self._calls_changed = anyio.Event()
        #: How many times the control connection was re-established after a loss.
        self.reconnects = 0

    def __repr__(self) -> str:
        state = "connected" if self._control is not None else "disconnected"
        return f"<TelcoflowClient {self.config.base_url} {state} calls={len(self._calls)}>"

    # --- public API ------------------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., Any] | None = None) -> Any:
        """Register a handler: ``@client.on(events.INCOMING_CALL)``; it gets the ``ActiveCall``.

        Each call's handler runs in its own task once the media connection is open; a handler
        that raises is logged with the call id and never takes the client down.
        """
        return self._handlers.on(event, handler)

    def get_call(self, call_id: str) -> ActiveCall | None:
        """The call while it is active, else ``None``."""
        return self._calls.get(call_id)

    @property
    def calls(self) -> list[ActiveCall]:
        """The active calls."""
        return list(self._calls.values())

    def incoming_calls(self) -> IncomingCalls:
        """The calls offered from now on, as an async iterator (instead of ``on``)::

        async for call in client.incoming_calls():
            tg.start_soon(agent, call)
        """
        iterator = IncomingCalls()
        self._iterators.append(iterator)
        return iterator

    async def drain(self, timeout: float) -> None:
        """Stop taking new calls, let the active ones finish for up to ``timeout`` seconds, then
        close what is left (the agent leaves) and disconnect. For rolling deploys: the server
        offers new calls to the connector's other connections meanwhile."""
        logger.info("draining: no new calls; %d active", len(self._calls))
        self._draining = True
        try:
            if self._supervisor is not None:
                self._supervisor.cancel()
            control, self._control = self._control, None
            if control is not None:
                await control.aclose(1001, "draining")
            with anyio.move_on_after(timeout):
                while self._calls or self._opening:
                    await self._calls_changed.wait()
        finally:
            self._draining = False
            await self._shutdown()

    @property
    def connected(self) -> bool:
        """True while the control connection is up."""
        return self._control is not None

    async def __aenter__(self) -> TelcoflowClient:
        if self._tg is not None:
            raise RuntimeError("this TelcoflowClient is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self.connect()
        except BaseException:
            self._tg = None
            tg.cancel_scope.cancel()
            await self._exit_task_group(tg)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        assert tg is not None
        try:
            await self._shutdown()
        finally:
            self._tg = None
            tg.cancel_scope.cancel()
            await self._exit_task_group(tg)

    @staticmethod
    async def _exit_task_group(tg: anyio.abc.TaskGroup) -> None:
        try:
            await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None

    async def connect(self) -> None:
        """Open the control connection (a no-op while it is open).

        Raises :class:`WSSAuthenticationError` for refused credentials (not retried) and
        :class:`WSSConnectionError` when the server cannot be reached or refuses the setup.
        """
        if self._control is not None:
            return
        self._fatal = None
        self._stopped = anyio.Event()
        self._control = await self._open_control()
        if self._tg is not None:
            # The scope exists before the task starts, so a shutdown that comes first stops it.
            self._supervisor = anyio.CancelScope()
            self._tg.start_soon(self._supervise, self._supervisor)

    async def disconnect(self) -> None:
        """Close every active call (the agent leaves) and the control connection.

        :meth:`run_forever` then returns.
        """
        await self._shutdown()

    async def run_forever(self) -> None:
        """Serve calls until :meth:`disconnect`; cancelling it shuts the client down cleanly.

        Outside ``async with`` it opens (and finally closes) the client itself. Raises the error
        that stopped the client when it gave up (for example refused credentials on reconnect).
        """
        if self._tg is None:
            async with self:
                await self._wait_stopped()
        else:
            await self._wait_stopped()

    async def _wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    # --- control connection ----------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            c = self.config
            self._ssl = client_ssl_context(
                ca_path=c.ca_path, cert_path=c.cert_path, key_path=c.key_path
            )
        return self._ssl

    def _control_headers(self) -> list[tuple[str, str]]:
        headers = [SDK_VERSION_HEADER]
        if self.config.auth == "api_key":
            assert self.config.api_key is not None
            assert self.config.connector_uuid is not None
            headers += [
                ("x-api-key", self.config.api_key),
                ("x-connector-uuid", self.config.connector_uuid),
            ]
        return headers

    async def _open_websocket(
        self, url: str, headers: list[tuple[str, str]], name: str
    ) -> WebSocketConnection:
        context = self._ssl_context() if url.startswith("wss://") else None
        with anyio.fail_after(self.config.connect_timeout):
            return await connect_websocket(url, headers=headers, ssl_context=context, name=name)

    async def _open_control(self) -> WebSocketConnection:
        url = f"{self.config.base_url}/v1/agent/control"
        try:
            conn = await self._open_websocket(url, self._control_headers(), "control")
        except HandshakeRejected as exc:
            if exc.status_code in (401, 403):
                what = "credentials refused" if exc.status_code == 401 else "connector disabled"
                raise WSSAuthenticationError(
                    f"{url}: {what} (HTTP {exc.status_code}: {exc.body})", exc.status_code
                ) from None
            raise WSSConnectionError(f"{url}: {exc}") from None
        except ConnectFailed as exc:
            raise WSSConnectionError(f"{url}: {exc}") from None
        except TimeoutError:
            raise WSSConnectionError(
                f"{url}: no connection within {self.config.connect_timeout:g} s"
            ) from None
        try:
            await self._setup(conn)
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def _setup(self, conn: WebSocketConnection) -> None:
        proto = ControlProtocol(Role.CLIENT)
        self._control_proto = proto
        c = self.config
        try:
            with anyio.fail_after(c.connect_timeout):
                await conn.send(proto.send(Setup(c.sample_rate, c.audio_mode)))
                while True:
                    msg = proto.receive(await conn.receive())
                    if isinstance(msg, SetupDone):
                        self.connection_id = msg.connection_id
                        logger.info("control connection ready (%s)", msg.connection_id)
                        return
                    if isinstance(msg, ErrorMessage):
                        raise WSSConnectionError(f"setup refused: {msg.code}: {msg.message}")
        except TimeoutError:
            raise WSSConnectionError("no setup.done within the connect timeout") from None
        except ConnectionClosed as exc:
            raise WSSConnectionError(f"control connection closed during setup: {exc}") from None
        except ProtocolError as exc:
            raise WSSConnectionError(f"bad frame during setup: {exc}") from None

    async def _supervise(self, scope: anyio.CancelScope) -> None:
        """Keep the control connection up until disconnect or a fatal error."""
        c = self.config.reconnect
        backoff = Backoff(c.initial_delay, c.factor, c.max_delay, c.jitter, c.max_attempts)
        with scope:
            while True:
                conn = self._control
                if conn is None:
                    return  # shut down before this task started
                await self._serve_control(conn)
                self._control = None
                if self._stopped.is_set():
                    return
                while self._control is None:
                    if backoff.exhausted:
                        self._stop(
                            WSSConnectionError(
                                "control connection lost; gave up after "
                                f"{backoff.attempts} attempts"
                            )
                        )
                        return
                    delay = backoff.next_delay()
                    logger.info("reconnecting in %.2f s (attempt %d)", delay, backoff.attempts)
                    await anyio.sleep(delay)
                    try:
                        self._control = await self._open_control()
                    except WSSAuthenticationError as exc:
                        logger.error("reconnect refused, not retrying: %s", exc)
                        self._stop(exc)
                        return
                    except WSSConnectionError as exc:
                        logger.warning("reconnect failed: %s", exc)
                self.reconnects += 1
                backoff.reset()

    def _stop(self, fatal: WSSError | None) -> None:
        self._fatal = fatal
        self._stopped.set()

    async def _serve_control(self, conn: WebSocketConnection) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._control_heartbeat, conn)
            try:
                await self._read_control(conn)
            except ConnectionClosed as exc:
                if not self._stopped.is_set():
                    logger.warning("control connection lost: %s", exc)
            finally:
                tg.cancel_scope.cancel()
                await conn.aclose()

    async def _control_heartbeat(self, conn: WebSocketConnection) -> None:
        try:
            await conn.heartbeat(self.config.ping_interval, self.config.ping_timeout)
        except ConnectionClosed:
            pass

    async def _read_control(self, conn: WebSocketConnection) -> None:
        proto = self._control_proto
        bad = 0
        while True:
            raw = await conn.receive()
            try:
                msg = proto.receive(raw)
            except ProtocolError as exc:
                bad += 1
                level = logging.WARNING if bad <= LOUD_ERRORS else logging.DEBUG
                logger.log(level, "ignoring bad control frame: %s", exc)
                continue
            if isinstance(msg, CallIncoming):
                self._offered(msg)
            elif isinstance(msg, CallEnded):
                scope = self._opening.get(msg.call_id)
                logger.info("call %s ended before it was claimed (%s)", msg.call_id, msg.reason)
                if scope is not None:
                    scope.cancel()
            elif isinstance(msg, ErrorMessage):
                logger.warning("server error on control connection: %s: %s", msg.code, msg.message)
            elif isinstance(msg, UnknownMessage):
                logger.debug("ignoring unknown control frame type %r", msg.type)

    def _offered(self, offer: CallIncoming) -> None:
        if self._stopped.is_set() or self._tg is None:
            logger.info("call %s offered while shutting down; left ringing", offer.call_id)
            return
        if self._draining:
            logger.info("call %s offered while draining; not taken", offer.call_id)
            return
        if offer.call_id in self._calls or offer.call_id in self._opening:
            logger.debug("call %s offered again; already ours", offer.call_id)
            return
        if len(self._opening) >= MAX_OPENING_CALLS:
            logger.warning(
                "call %s not taken: %d media connections already opening",
                offer.call_id,
                len(self._opening),
            )
            return
        logger.info("call %s offered (from %s)", offer.call_id, offer.from_number)
        assert self._tg is not None
        scope = self._opening[offer.call_id] = anyio.CancelScope()
        self._handoff.append(offer.call_id)
        self._tg.start_soon(self._run_call, offer, scope)

    # --- calls -----------------------------------------------------------------------------------

    async def _run_call(self, offer: CallIncoming, scope: anyio.CancelScope) -> None:
        try:
            await self._open_and_serve(offer, scope)
        finally:
            self._handed_off(offer.call_id)

    async def _open_and_serve(self, offer: CallIncoming, scope: anyio.CancelScope) -> None:
        headers = [("authorization", f"Bearer {offer.media_token}"), SDK_VERSION_HEADER]
        with scope:
            try:
                conn = await self._open_websocket(
                    offer.media_url, headers, f"media {offer.call_id}"
                )
            except (ConnectFailed, TimeoutError) as exc:
                error = WSSMediaError(f"call {offer.call_id}: cannot open media connection: {exc}")
                logger.warning("%s", error)
                return
            finally:
                del self._opening[offer.call_id]
                self._notify_calls()
        if scope.cancelled_caught:
            return
        if self._stopped.is_set():  # opened just as the client shut down: leave it ringing
            await conn.aclose()
            return
        call = ActiveCall(offer, self.config, conn, on_ended=self._call_ended)
        self._calls[offer.call_id] = call
        self._serving.add(call)
        self._notify_calls()
        try:
            await call._serve(self._incoming_call)
        finally:
            self._serving.discard(call)

    def _handed_off(self, call_id: str) -> None:
        """``call_id`` was handed to the application, or never will be: later calls may go."""
        if call_id in self._handoff:
            self._handoff.remove(call_id)
            changed, self._handoff_changed = self._handoff_changed, anyio.Event()
            changed.set()

    async def _incoming_call(self, call: ActiveCall) -> None:
        # The application gets calls in the order they were offered (its media is served
        # meanwhile: this is the handler's task, not the call's I/O), but a call whose media
        # connection is slow to open holds the ones after it back only briefly.
        with anyio.move_on_after(HANDOFF_ORDER_WAIT):
            while call.call_id in self._handoff and self._handoff[0] != call.call_id:
                await self._handoff_changed.wait()
        self._handed_off(call.call_id)
        for iterator in self._iterators:
            if not iterator._offer(call):
                logger.warning("call %s: incoming_calls() consumer is not keeping up", call.call_id)
        await self._handlers.fire(events.INCOMING_CALL, call, logger, f"call {call.call_id}")

    def _call_ended(self, call: ActiveCall) -> None:
        self._calls.pop(call.call_id, None)
        self._notify_calls()

    def _notify_calls(self) -> None:
        self._calls_changed.set()
        self._calls_changed = anyio.Event()

    async def _leave(self, call: ActiveCall) -> None:
        """The agent leaves ``call``: politely where the state allows (waiting for the server's
        ``call.terminated``, so the call ends with the server's reason), then locally; then its
        handlers see ``CALL_TERMINATED`` before its tasks are cancelled."""
        with anyio.move_on_after(LEAVE_TIMEOUT):
            if call.is_active and call.state in (CallState.ANSWERED, CallState.CONNECTED):
                try:
                    await call.close()
                except WSSError as exc:
                    logger.debug("call %s: close on exit failed: %s", call.call_id, exc)
            if call.is_active and call.state is CallState.DISCONNECTED:
                await call.wait_terminated()  # closed by us or the app; the event is on its way
        await call.force_disconnect()
        with anyio.move_on_after(LEAVE_TIMEOUT):
            await call._events_done.wait()
        call._scope.cancel()

    async def _shutdown(self) -> None:
        with anyio.CancelScope(shield=True):
            self._stop(self._fatal)
            for iterator in self._iterators:
                iterator._close()
            self._iterators.clear()
            if self._supervisor is not None:
                self._supervisor.cancel()
            for scope in list(self._opening.values()):
                scope.cancel()
            async with anyio.create_task_group() as tg:
                for call in list(self._calls.values()):
                    tg.start_soon(self._leave, call)
            for call in list(self._serving):  # ended calls whose handlers still run
                call._scope.cancel()
            control, self._control = self._control, None
            if control is not None:
                await control.aclose()
