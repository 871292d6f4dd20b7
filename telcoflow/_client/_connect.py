"""How the client reaches the service: its URLs, TLS context and credentials; the control
connection's handshake and setup, a media connection's handshake, and the REST plane.

A failure of the control connection or of the REST plane leaves here as a documented ``WSS*``
error that says what to do (credentials refused, a client certificate the server does not
accept, a protocol version it refuses, a timeout), never as an exception of the connection
layer or of httpx. A media connection that cannot be opened costs its call only: the client
decides what to say (``ConnectFailed`` leaves here).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import anyio
import httpx

from .._core import CallIn, ControlProtocol, ErrorMessage, ProtocolError, Role, Setup, SetupDone
from .._net import (
    ConnectFailed,
    ConnectionClosed,
    HandshakeRejected,
    WebSocketConnection,
    client_ssl_context,
    connect_websocket,
)
from .._version import __version__
from ..config import TelcoflowClientConfig
from ..exceptions import WSSAuthenticationError, WSSConnectionError, WSSError, WSSRequestError
from ._control import Control

__all__ = ["USER_AGENT", "Connector"]

logger = logging.getLogger("telcoflow_sdk.control_connection")

USER_AGENT = f"telcoflow-anyio/{__version__}"


class Connector:
    """Opens this client's connections to the service, and makes its REST requests."""

    __slots__ = ("_config", "_http", "_ssl")

    def __init__(self, config: TelcoflowClientConfig) -> None:
        self._config = config
        self._ssl: ssl.SSLContext | None = None
        self._http: httpx.AsyncClient | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of every connection (made once: reading the files takes time)."""
        if self._ssl is None:
            c = self._config
            self._ssl = client_ssl_context(
                ca_path=c.ca_path, cert_path=c.cert_path, key_path=c.key_path
            )
        return self._ssl

    def auth_headers(self) -> list[tuple[str, str]]:
        """The headers that authenticate this client (API key auth; mTLS needs none)."""
        c = self._config
        headers: list[tuple[str, str]] = []
        if c.auth == "api_key":
            assert c.api_key is not None
            assert c.connector_uuid is not None
            headers += [("x-api-key", c.api_key), ("x-connector-uuid", c.connector_uuid)]
        headers += [("x-sdk-version", c.sdk_version), ("user-agent", USER_AGENT)]
        return headers

    async def _open_websocket(
        self, url: str, headers: list[tuple[str, str]], name: str
    ) -> WebSocketConnection:
        context = self.ssl_context() if url.startswith("wss://") else None
        return await connect_websocket(url, headers=headers, ssl_context=context, name=name)

    async def open_media(self, call_in: CallIn) -> WebSocketConnection:
        """Open the media connection ``call_in`` names, with its token; ``ConnectFailed`` if it
        cannot."""
        headers = [
            ("authorization", f"Bearer {call_in.token}"),
            ("x-sdk-version", self._config.sdk_version),
            ("user-agent", USER_AGENT),
        ]
        return await self._open_websocket(call_in.url, headers, f"media {call_in.call_id}")

    async def open_control(self) -> Control:
        """Connect, upgrade and set up, all within ``connect_timeout``."""
        c = self._config
        url = f"{c.base_url}/v1/agent/session-manager"
        conn: WebSocketConnection | None = None
        try:
            with anyio.fail_after(c.connect_timeout):
                try:
                    conn = await self._open_websocket(url, self.auth_headers(), "control")
                except HandshakeRejected as exc:
                    raise self._rejected(url, exc) from None
                except ConnectFailed as exc:
                    raise self._connect_failed(url, exc) from None
                return await self._setup(conn)
        except TimeoutError:
            if conn is not None:
                await conn.abort()
            what = "set up" if conn is not None else "connected"
            raise WSSConnectionError(
                f"{url}: not {what} within the connect timeout ({c.connect_timeout:g} s)"
            ) from None
        except BaseException:
            if conn is not None:
                await conn.aclose()
            raise

    def _connect_failed(self, url: str, exc: ConnectFailed) -> WSSError:
        """The error for a connection that failed: with mutual TLS, a server that hangs up
        or alerts right after the TLS handshake is refusing the client certificate, which
        OpenSSL reports only as ``EndOfStream()`` or an alert name: say so, naming the file."""
        c = self._config
        if c.auth != "mtls" or "handshake with" not in str(exc):
            return WSSConnectionError(f"{url}: {exc}")
        causes: list[BaseException] = []
        cause: BaseException | None = exc.__cause__
        while cause is not None and len(causes) < 5:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        alert = next(
            (str(e) for e in causes if isinstance(e, ssl.SSLError) and "alert" in str(e)), None
        )
        where = f"cert_path {c.cert_path!r}"
        if alert is not None:
            return WSSAuthenticationError(
                f"{url}: the server rejected the client certificate ({where}): {alert}", None
            )
        if any(isinstance(e, (anyio.EndOfStream, anyio.BrokenResourceError)) for e in causes):
            return WSSConnectionError(
                f"{url}: the server hung up right after the TLS handshake, before answering "
                f"the upgrade: it most likely does not accept the client certificate ({where}; "
                "is it this connector's, issued by the service, and still valid?)"
            )
        return WSSConnectionError(f"{url}: {exc}")

    @staticmethod
    def _rejected(url: str, exc: HandshakeRejected) -> WSSError:
        status, body = exc.status_code, exc.body.strip()
        text = f" ({body})" if body else ""
        if status in (401, 403):
            what = "credentials refused" if status == 401 else "connector disabled"
            return WSSAuthenticationError(f"{url}: {what}, HTTP {status}{text}", status)
        if status == 426:
            return WSSConnectionError(
                f"{url}: the server refuses this SDK's protocol version, HTTP 426{text}",
                status,
                fatal=True,
            )
        return WSSConnectionError(f"{url}: upgrade refused, HTTP {status}{text}", status)

    async def _setup(self, conn: WebSocketConnection) -> Control:
        proto = ControlProtocol(Role.CLIENT)
        c = self._config
        try:
            await conn.send(proto.send(Setup(c.sample_rate, c.audio_mode)))
            while True:
                msg = proto.receive(await conn.receive())
                if isinstance(msg, SetupDone):
                    logger.info("control connection ready (smWsId %s)", msg.sm_ws_id or "?")
                    return Control(conn, proto, msg.sm_ws_id, c.request_timeout)
                if isinstance(msg, ErrorMessage):
                    raise WSSConnectionError(
                        f"setup refused: {msg.code}: {msg.message}", fatal=True
                    )
        except ConnectionClosed as exc:
            raise WSSConnectionError(f"control connection closed during setup: {exc}") from None
        except ProtocolError as exc:
            raise WSSConnectionError(f"bad frame during setup: {exc}") from None

    async def rest(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        """A request to the REST plane: its JSON body, or the error it answered with."""
        if self._http is None:
            c = self._config
            headers = [(k, v) for k, v in self.auth_headers()]
            verify: ssl.SSLContext | bool = (
                self.ssl_context() if c.rest_url.startswith("https") else True
            )
            self._http = httpx.AsyncClient(
                base_url=c.rest_url,
                headers=headers,
                verify=verify,
                timeout=c.request_timeout,
            )
        try:
            response = await self._http.request(method, path, params=params)
        except httpx.HTTPError as exc:
            raise WSSConnectionError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.is_success:
            return body
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        text = message if isinstance(message, str) else response.text[:200]
        if response.status_code in (401, 403):
            raise WSSAuthenticationError(
                f"{method} {path}: HTTP {response.status_code}: {text}", response.status_code
            )
        raise WSSRequestError(
            f"{method} {path}: HTTP {response.status_code}: [{code}] {text}",
            error_code=code if isinstance(code, str) else None,
        )

    async def aclose(self) -> None:
        """Close the REST plane's HTTP client (it is made again if needed)."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
