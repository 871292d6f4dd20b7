"""The agent's health server: ``/healthz``, ``/readyz``, ``/metrics``, over h11 on anyio.

Small on purpose: three GET endpoints for a process manager or Kubernetes (liveness, readiness,
Prometheus scraping). Each request is answered and the connection closed; a request's head must
arrive within a few seconds, so a scraper that hangs cannot hold the server.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import h11

__all__ = ["HealthServer", "Probe"]

logger = logging.getLogger("telcoflow_sdk.runner")

#: A request's head must arrive within this.
HEAD_TIMEOUT_S = 5.0

#: What a probe answers: (ready, detail).
Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves ``/healthz`` (always 200 while the process runs), ``/readyz`` (200 when ``ready``
    says so, else 503) and ``/metrics`` (what ``metrics`` returns)."""

    def __init__(self, ready: Probe, metrics: Callable[[], Awaitable[bytes] | bytes]) -> None:
        self._ready = ready
        self._metrics = metrics
        self.port = 0

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port), report the port, serve until cancelled."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        task_status.started(self.port)
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            try:
                with anyio.fail_after(HEAD_TIMEOUT_S):
                    event = conn.next_event()
                    while event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive())
                        event = conn.next_event()
            except (TimeoutError, h11.RemoteProtocolError, anyio.EndOfStream, OSError):
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if not isinstance(event, h11.Request):
                return
            status, body, ctype = await self._answer(event)
            headers = [
                ("content-type", ctype),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ]
            try:
                out = conn.send(h11.Response(status_code=status, headers=headers))
                out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
                out += conn.send(h11.EndOfMessage()) or b""
                await stream.send(out)
            except (h11.LocalProtocolError, anyio.BrokenResourceError, OSError):
                pass

    async def _answer(self, request: h11.Request) -> tuple[int, bytes, str]:
        path = request.target.decode("latin-1").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            return 405, b"use GET\n", "text/plain"
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/readyz":
            ready, detail = self._ready()
            return (200 if ready else 503), f"{detail}\n".encode(), "text/plain"
        if path == "/metrics":
            result = self._metrics()
            body = result if isinstance(result, bytes) else await result
            return 200, body, "text/plain; version=0.0.4; charset=utf-8"
        return 404, b"no such endpoint\n", "text/plain"
