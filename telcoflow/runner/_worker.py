"""One agent process: a client taking calls for the application's handler, until a signal.

SIGTERM (what a container manager sends to stop a process) and a first Ctrl-C drain: no new
calls are claimed (the connector's other processes take them), the calls in hand go on for up
to ``drain_timeout``, then the agent leaves what is left, politely, and the process exits 0. A
second signal leaves every call at once, still politely (``call.close``; their
``CALL_TERMINATED`` handlers run).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import attrs

from .. import events
from ..call import ActiveCall
from ..client import TelcoflowClient
from ..config import TelcoflowClientConfig
from ._http import HealthServer
from ._metrics import AgentMetrics
from ._watchdog import Watchdog

__all__ = ["AgentOptions", "serve_agent"]

logger = logging.getLogger("telcoflow_sdk.runner")

#: How often the metrics and the status file are brought up to date.
SYNC_INTERVAL_S = 0.5
#: The loop-lag probe's timer.
LAG_PROBE_S = 0.1


@attrs.frozen(kw_only=True)
class AgentOptions:
    """How ``telcoflow run`` runs an agent (see its ``--help``)."""

    drain_timeout: float = 600.0
    http_host: str = "127.0.0.1"
    #: Serve ``/healthz``, ``/readyz`` and ``/metrics`` here (0: any free port; None: no).
    http_port: int | None = None
    #: Under a supervisor: where this worker writes its state, for the supervisor's probes.
    status_file: str | None = None
    #: Under a supervisor: its pid. Should it die without stopping this worker (SIGKILL, the
    #: OOM killer), the worker notices it has a new parent and drains, rather than live on
    #: as an orphan nobody stops.
    supervisor_pid: int | None = None
    watchdog: bool = True
    #: Called with the health server's port once it listens (for tests and the CLI).
    on_listening: Callable[[int], None] | None = None


def _write_status(path: str, client: TelcoflowClient) -> None:
    state = {
        "pid": os.getpid(),
        "ready": client.connected and not client.draining,
        "draining": client.draining,
        "active_calls": len(client.calls),
    }
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".status-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


async def _keep_up(
    client: TelcoflowClient,
    metrics: AgentMetrics,
    options: AgentOptions,
    tg: anyio.abc.TaskGroup,
) -> None:
    orphaned = False
    while True:
        before = anyio.current_time()
        await anyio.sleep(LAG_PROBE_S)
        metrics.loop_lag.observe(max(0.0, anyio.current_time() - before - LAG_PROBE_S))
        metrics.sync(client)
        supervisor = options.supervisor_pid
        if supervisor is not None and not orphaned and os.getppid() != supervisor:
            orphaned = True
            logger.warning(
                "the supervisor (pid %d) is gone: draining, then this worker exits", supervisor
            )
            if not client.draining:
                tg.start_soon(client.drain, options.drain_timeout)
        if options.status_file is not None and not orphaned:
            _write_status(options.status_file, client)


async def _on_signals(
    client: TelcoflowClient, options: AgentOptions, tg: anyio.abc.TaskGroup
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        draining = False
        async for received in signals:
            name = signal.Signals(received).name
            if not draining:
                draining = True
                logger.warning(
                    "%s: draining: no new calls; %d in hand get up to %.0f s to end (a second "
                    "signal leaves them now)",
                    name,
                    len(client.calls),
                    options.drain_timeout,
                )
                tg.start_soon(client.drain, options.drain_timeout)
            else:
                logger.warning(
                    "%s again: leaving the %d calls in hand now", name, len(client.calls)
                )
                await client.disconnect()
                return


async def serve_agent(
    handler: Callable[..., Any],
    config: TelcoflowClientConfig,
    options: AgentOptions | None = None,
) -> int:
    """Run ``handler`` for every call the connector gets, until SIGTERM/Ctrl-C; 0 after a clean
    drain. The same object ``client.on(INCOMING_CALL, ...)`` takes: an ``async def
    agent(call)``."""
    options = options or AgentOptions()
    metrics = AgentMetrics()
    async with TelcoflowClient(config) as client:

        async def publish_when_over(call: ActiveCall) -> None:
            # Registered before the application's handler: the metrics count a call as soon
            # as it ends, not at the next sync.
            def published(reason: str) -> None:
                metrics.sync(client)
                logger.debug("call %s ended (%s): metrics published", call.call_id, reason)

            call.on(events.CALL_TERMINATED, published)

        client.on(events.INCOMING_CALL, publish_when_over)
        client.on(events.INCOMING_CALL, handler)

        def ready() -> tuple[bool, str]:
            if client.draining:
                return False, "draining"
            if not client.connected:
                return False, "control connection down"
            return True, f"ready; {len(client.calls)} calls"

        async with anyio.create_task_group() as tg:
            tg.start_soon(_keep_up, client, metrics, options, tg)
            tg.start_soon(_on_signals, client, options, tg)
            if options.watchdog:
                tg.start_soon(Watchdog().run)
            if options.http_port is not None:
                server = HealthServer(ready, metrics.exposition)
                port = await tg.start(server.serve, options.http_host, options.http_port)
                logger.info("health and metrics on http://%s:%d", options.http_host, port)
                if options.on_listening is not None:
                    options.on_listening(port)
            try:
                await client.run_forever()
            finally:
                metrics.sync(client)
                metrics.stopped()
                if options.status_file is not None:
                    _write_status(options.status_file, client)
                tg.cancel_scope.cancel()
    return 0
