"""``Sandbox``: a local Telcoflow server (PROTOCOL.md's control, media and REST planes, plus the
sandbox's own HTTP API of SANDBOX.md) on one port.

The facade composes the parts, each with one job: the front door (listener, TLS, HTTP/WebSocket
sniffing, authentication), the switchboard (sessions, notifications, claims, tokens, call flows,
outbound calls), the calls (media, parties, recordings, on one media clock), the HTTP APIs and
the fault injector. It owns their lifetime: ``async with Sandbox() as sb`` starts them in one
task group and stops them all on exit; nothing outlives the block.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._net import ConnectionClosed
from .._net._serving import Serving, close_listener
from ._call import SimCall
from ._clock import MediaClock
from ._faults import Fault, FaultInjector, parse_fault
from ._frontdoor import CONTROL_PATH, FrontDoor, Limits, TlsFiles, Upgrade
from ._http import HttpApi
from ._rest import RestApi
from ._spec import CallSpec, NumberSpec
from ._switchboard import Connector, Retention, SimSession, SmConnection, Switchboard

__all__ = ["DEFAULT_API_KEY", "DEFAULT_CONNECTOR_UUID", "Connector", "Sandbox"]

logger = logging.getLogger("telcoflow.sandbox")

DEFAULT_API_KEY = "sandbox-api-key"
DEFAULT_CONNECTOR_UUID = "00000000-0000-4000-8000-000000000001"
#: The numbers of connectors given without one: the first, then +659100000N.
DEFAULT_NUMBER = "+6590000002"


def _numbered(connectors: list[Connector]) -> list[Connector]:
    """Each connector with a phone number of its own."""
    used = {c.number for c in connectors}
    out: list[Connector] = []
    for i, c in enumerate(connectors):
        if i > 0 and c.number == DEFAULT_NUMBER:
            number = f"+65910000{i:02d}"
            while number in used:
                number = f"+659{int(number[4:]) + 1:07d}"
            used.add(number)
            c = attrs.evolve(c, number=number)
        out.append(c)
    return out


class Sandbox(Serving):
    """A local Telcoflow server. ``async with Sandbox() as sb:`` then point a client at
    ``sb.base_url`` with ``sb.api_key`` and ``sb.connector_uuid``.

    ``connectors`` are the (API key, connector uuid) pairs accepted (the default pair when not
    given); one connector never sees another's calls. ``tls=True`` serves ``wss://`` with a CA
    generated on start (``sb.ca_path``) and accepts client certificates issued by it
    (``sb.client_cert_path``/``sb.client_key_path`` for the first connector,
    ``sb.client_certs`` for all) for production-mode (mutual TLS) clients, and a connector's own
    ``Connector(client_cert=...)`` (the application's certificate, whoever issued it: an
    application runs against the sandbox unchanged). ``record=False``
    keeps no recordings (long or many calls). ``admin_token``, required for any address other
    than loopback, guards the HTTP API (``Authorization: Bearer <token>``): without it anyone
    who reaches the port can read every connector's credentials and hang up, record or fault
    any call. ``limits`` bounds what one client may take of it (timeouts, body size,
    connections: :class:`Limits`); ``retention`` how much of the past it keeps (ended calls
    and their recordings: :class:`Retention`). ``claim_timeout``/``media_timeout`` are the
    protocol's 30 s (shorter ones make tests of re-notification quick); ``token_ttl`` is how
    long a media token stays valid unused (60 s). ``media_base_url`` replaces where ``call.in``
    says a call's media is (``{media_base_url}/v1/agent/media/{callId}``; by default this
    sandbox itself, as the client reached it), as a deployment whose media is on other hosts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool = False,
        connectors: list[Connector] | None = None,
        record: bool = True,
        claim_timeout: float | None = None,
        media_timeout: float | None = None,
        token_ttl: float | None = None,
        admin_token: str | None = None,
        limits: Limits | None = None,
        retention: Retention | None = None,
        media_base_url: str | None = None,
    ) -> None:
        if admin_token is None and not _is_loopback(host):
            raise ValueError(
                f"a sandbox on {host!r} is reachable by others: give it an admin_token "
                "(its HTTP API hands out every connector's credentials and controls every call)"
            )
        if admin_token is not None and (not isinstance(admin_token, str) or len(admin_token) < 16):
            raise ValueError("admin_token must be a string of at least 16 characters")
        self.admin_token = admin_token
        self.host = host
        self.port = port
        self.tls = tls
        self.record = record
        self.connectors = _numbered(
            connectors or [Connector(DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID)]
        )
        for c in self.connectors:
            if c.client_cert is not None and not tls:
                raise ValueError(
                    f"connector {c.connector_uuid}: a client_cert needs tls=True (mutual TLS)"
                )
        if len({c.connector_uuid for c in self.connectors}) != len(self.connectors):
            raise ValueError("connector uuids must be unique")
        self._faults = FaultInjector()
        self._clock = MediaClock()
        self._changed = anyio.Event()
        timeouts: dict[str, float] = {}
        if claim_timeout is not None:
            timeouts["claim_timeout"] = claim_timeout
        if media_timeout is not None:
            timeouts["media_timeout"] = media_timeout
        if token_ttl is not None:
            timeouts["token_ttl"] = token_ttl
        self._switchboard = Switchboard(
            self.connectors,
            self._faults,
            self._clock,
            record=record,
            retention=retention,
            changed=self._notify,
            **timeouts,
        )
        self._front = FrontDoor(
            connectors=self.connectors,
            switchboard=self._switchboard,
            sandbox_api=HttpApi(self).handle,
            rest_api=RestApi(self._switchboard).handle,
            faults=self._faults,
            changed=self._notify,
            authority=self._authority,
            tls=tls,
            admin_token=admin_token,
            limits=limits,
            media_base_url=media_base_url,
        )
        self._tls_files: TlsFiles | None = None
        self.ca_path: str | None = None
        self.client_cert_path: str | None = None  # (no key for an application's own)
        self.client_key_path: str | None = None
        #: connector uuid -> (client certificate path, key path), with ``tls=True``.
        self.client_certs: dict[str, tuple[str, str]] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The default connector's API key."""
        return self.connectors[0].api_key

    @property
    def connector_uuid(self) -> str:
        """The default connector's uuid."""
        return self.connectors[0].connector_uuid

    @property
    def number(self) -> str:
        """The default connector's phone number."""
        return self.connectors[0].number

    @property
    def base_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS): the client's ``base_url``."""
        return f"{'wss' if self.tls else 'ws'}://{self._authority()}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS): the HTTP API's root."""
        return f"{'https' if self.tls else 'http'}://{self._authority()}"

    @property
    def upgrades(self) -> list[Upgrade]:
        """The WebSocket upgrades decided so far (the most recent thousand), oldest first:
        path, status, the connector authenticated, the client's ``x-sdk-version`` and
        ``User-Agent``."""
        return list(self._front.upgrades)

    def control_upgrades(self) -> list[Upgrade]:
        """The control-plane upgrades among :attr:`upgrades`."""
        return [u for u in self._front.upgrades if u.path == CONTROL_PATH]

    @property
    def tokens_outstanding(self) -> int:
        """Media tokens issued and neither used, replaced nor expired yet."""
        return self._switchboard.token_count()

    @property
    def token_ttl(self) -> float:
        """How long a media token stays valid unused, in seconds."""
        return self._switchboard.token_ttl

    @property
    def faults_injected(self) -> dict[str, int]:
        """Faults injected so far, by kind."""
        return self._faults.injected

    def held(self, what: str) -> int:
        """Connections held by a hang fault so far (``"setup"`` or ``"media"``)."""
        return self._faults.held[what]

    def released(self, what: str) -> int:
        """Connections held by a hang fault that the client gave up so far."""
        return self._faults.released[what]

    def _authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def _start(self, stack: AsyncExitStack) -> None:
        if self.tls:
            self._tls_files = files = TlsFiles(self.connectors)
            stack.callback(files.cleanup)
            self.ca_path = files.ca_path
            self.client_certs = dict(files.client_certs)
            first = self.connectors[0]
            if first.client_cert is not None:  # the application's own: no key here
                self.client_cert_path, self.client_key_path = first.client_cert, None
            else:
                self.client_cert_path, self.client_key_path = files.client_certs[
                    first.connector_uuid
                ]
        listener, self.port = await self._front.listen(self.host, self.port, self._tls_files)
        stack.push_async_callback(close_listener, listener)
        tg = await stack.enter_async_context(anyio.create_task_group())
        # Unwound last in, first out: calls end politely, then every task stops.
        stack.callback(tg.cancel_scope.cancel)
        stack.push_async_callback(self._switchboard.shutdown)
        tg.start_soon(self._front.serve, listener)
        tg.start_soon(self._clock.run)
        self._switchboard.start(tg)
        logger.info("sandbox listening on %s", self.base_url)

    async def aclose(self) -> None:
        """End every call (``server_shutdown``), close every connection, stop serving."""
        await super().aclose()

    # --- observation -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever connections or calls change."""
        while not predicate():
            await self._changed.wait()

    def control_sessions(self, connector_uuid: str | None = None) -> list[SmConnection]:
        """The live control connections of a connector (the default one if not given)."""
        return self._switchboard.live(connector_uuid or self.connector_uuid)

    def sessions(self, connector_uuid: str | None = None) -> list[SimSession]:
        """Every session of a connector (the default one if not given), closed ones included."""
        return self._switchboard.sessions_of(connector_uuid or self.connector_uuid)

    def health(self) -> dict[str, Any]:
        """``GET /sandbox/health``: the connectors, and how the sandbox keeps up."""
        calls = self._switchboard.calls.values()
        return {
            "status": "ok",
            "connectors": [
                {"api_key": c.api_key, "connector_uuid": c.connector_uuid, "number": c.number}
                for c in self.connectors
            ],
            "calls": {
                "live": sum(not c.ended for c in calls),
                "kept": len(self._switchboard.calls),
            },
            "media": {
                "calls_ticking": self._clock.listeners,
                "behind_ms": round(self._clock.behind_s * 1000),
                "skipped_ms": sum(c.stats.skipped_ms for c in calls),
                "skipped_ticks": self._clock.skipped_ticks,
            },
            "connections": {
                "open": self._front.slots.total,
                "limit": self._front.slots.limit,
                "evicted": self._front.slots.evicted,
                "refused": self._front.slots.refused,
            },
        }

    @property
    def calls(self) -> list[SimCall]:
        """Every call placed on this sandbox, ended ones included."""
        return list(self._switchboard.calls.values())

    def get_call(self, call_id: str) -> SimCall | None:
        """The call with this id (``call.in``'s ``callId``), or None."""
        return self._switchboard.calls.get(call_id)

    # --- calls -----------------------------------------------------------------------------------

    def _connector(self, connector_uuid: str | None) -> Connector:
        uuid = connector_uuid or self.connector_uuid
        for c in self.connectors:
            if c.connector_uuid == uuid:
                return c
        raise ValueError(f"unknown connector_uuid {uuid!r}")

    async def create_call(self, spec: CallSpec | None = None, **fields: Any) -> SimCall:
        """Place a simulated inbound call; notified at once to the connected clients of its
        connector, or to clients as they connect. ``fields`` are :class:`CallSpec` fields."""
        if not self.running:
            raise RuntimeError("the sandbox is not running")
        spec = spec or CallSpec(**fields)
        spec.validate()  # before anything exists: a bad voice never becomes a zombie call
        call = await self._switchboard.place_call(spec, self._connector(spec.connector_uuid))
        self._notify()
        return call

    def set_number(self, number: str, spec: NumberSpec) -> None:
        """How ``number`` behaves when an agent dials it (``PUT /sandbox/numbers/{e164}``)."""
        if not isinstance(number, str) or not number or len(number) > 64:
            raise ValueError("the number must be a phone number string")
        CallSpec(caller=spec.voice).validate()
        self._switchboard.numbers[number] = spec

    # --- faults ----------------------------------------------------------------------------------

    async def inject_fault(self, body: Any) -> dict[str, Any]:
        """Apply a fault (``POST /sandbox/faults``; see SANDBOX.md). ``body`` is its JSON or a
        :class:`Fault`. Raises ``ValueError`` for a bad request or a missing target."""
        fault = body if isinstance(body, Fault) else parse_fault(body)
        result = await self._apply(fault)
        self._faults.count(fault.kind)
        logger.info("fault injected: %s %s", fault.kind, result)
        return {"kind": fault.kind, **result}

    async def _flood(self, fault: Fault) -> int:
        """Send ``count`` copies of the payload, a batch per write, as fast as taken."""
        sb = self._switchboard
        if fault.target == "media":
            conn = sb.agent_media(fault.call_id).conn
        else:
            conn = self._matching(fault)[0].conn
        sent = 0
        try:
            while sent < fault.count:
                batch = min(1000, fault.count - sent)
                await conn.send_many([fault.payload] * batch)
                sent += batch
                await anyio.lowlevel.checkpoint()  # the flood's peer, not the sandbox, suffers
        except ConnectionClosed:
            pass
        return sent

    def _matching(self, fault: Fault) -> list[SmConnection]:
        connector = self._connector(fault.connector_uuid)
        conns = self._switchboard.live(connector.connector_uuid)
        if fault.connection_id is not None:
            conns = [sm for sm in conns if sm.sm_ws_id == fault.connection_id]
        if not conns:
            raise ValueError("no matching control connection")
        return conns

    async def _apply(self, fault: Fault) -> dict[str, Any]:
        sb = self._switchboard
        if fault.kind == "drop_control":
            conns = self._matching(fault)
            for sm in conns:
                await sm.conn.abort()
                sb.connection_gone(sm)
            return {"dropped": [sm.sm_ws_id for sm in conns]}
        if fault.kind == "drop_media":
            agent = sb.agent_media(fault.call_id)
            agent.lost = True
            await agent.conn.abort()
            return {"dropped": [fault.call_id]}
        if fault.kind in ("delay_command", "fail_command"):
            return {"armed": self._faults.arm_command_fault(fault)}
        if fault.kind == "malformed_frame":
            if fault.target == "media":
                agent = sb.agent_media(fault.call_id)
                try:
                    await agent.conn.send(fault.payload)
                except ConnectionClosed:
                    pass
                return {"sent": 1}
            conns = self._matching(fault)
            sent = sum(sm.push_raw(fault.payload) for sm in conns)
            return {"sent": sent}
        if fault.kind == "flood":
            return {"sent": await self._flood(fault)}
        if fault.kind == "call_error":
            agent = sb.agent_media(fault.call_id)
            await agent.report_error(fault.error_code, fault.error_message)
            return {"sent": 1}
        if fault.kind in ("hang_setup", "hang_media"):
            what = fault.kind.removeprefix("hang_")
            self._faults.hang_for(what, anyio.current_time(), fault.seconds, fault.read)
            return {"seconds": fault.seconds}
        assert fault.kind == "refuse_connections"
        self._faults.refuse_for(anyio.current_time(), fault.seconds, fault.status)
        return {"seconds": fault.seconds, "status": fault.status}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
