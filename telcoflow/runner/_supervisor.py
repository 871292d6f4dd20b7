"""``--workers N``: N agent processes on one connector, and their supervisor.

Each worker is its own ``telcoflow run`` process with its own control connection; the server's
notify-then-claim spreads the calls over them (a worker at ``--max-calls`` claims nothing and
the call goes to one with room). The supervisor:

- restarts a worker that dies, after a backoff (1 s doubling to 30 s; a worker that lived a
  minute starts again from 1 s) — the other workers and their calls are untouched;
- forwards SIGTERM / a first Ctrl-C to every worker (they drain), and a second signal as
  SIGINT (they leave their calls at once, politely); it exits 0 once every worker exited 0;
- serves ``/healthz``, ``/readyz`` (200 while some worker is ready) and ``/metrics`` (the sum
  of the workers', through ``prometheus_client``'s multiprocess mode).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

import anyio
import anyio.abc

from ._http import HealthServer
from ._metrics import aggregated_metrics, mark_dead

__all__ = ["supervise"]

logger = logging.getLogger("telcoflow_sdk.runner")

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
#: A worker that lived this long had a good run: its next restart waits the first delay again.
STABLE_S = 60.0


class _Slot:
    def __init__(self, index: int, status_file: str) -> None:
        self.index = index
        self.status_file = status_file
        self.process: anyio.abc.Process | None = None
        self.exit_codes: list[int] = []
        self.restarts = 0


async def supervise(
    worker_argv: Sequence[str],
    workers: int,
    *,
    drain_timeout: float,
    http_host: str = "127.0.0.1",
    http_port: int | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``workers`` processes of ``worker_argv`` (a ``telcoflow run`` command line, without
    ``--workers``) until a signal; the exit code: 0 when all drained cleanly."""
    directory = tempfile.mkdtemp(prefix="telcoflow-run-")
    metrics_dir = os.path.join(directory, "metrics")
    os.mkdir(metrics_dir)
    environ = {**os.environ, **(env or {}), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    slots = [_Slot(i, os.path.join(directory, f"worker-{i}.json")) for i in range(workers)]
    stopping = anyio.Event()
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(_relay_signals, slots, stopping, drain_timeout)
            if http_port is not None:
                server = HealthServer(
                    lambda: _ready(slots, stopping), lambda: aggregated_metrics(metrics_dir)
                )
                port = await outer.start(server.serve, http_host, http_port)
                logger.warning("health and metrics on http://%s:%d", http_host, port)
            async with anyio.create_task_group() as running:  # until every worker stopped
                for slot in slots:
                    running.start_soon(_run_slot, slot, worker_argv, environ, stopping, metrics_dir)
            outer.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    codes = [slot.exit_codes[-1] if slot.exit_codes else 1 for slot in slots]
    logger.warning("all workers stopped (exit codes %s)", codes)
    return 0 if all(code == 0 for code in codes) else 1


def _ready(slots: list[_Slot], stopping: anyio.Event) -> tuple[bool, str]:
    if stopping.is_set():
        return False, "draining"
    ready = 0
    for slot in slots:
        try:
            with open(slot.status_file) as f:
                ready += bool(json.load(f).get("ready"))
        except (OSError, ValueError):
            pass
    return ready > 0, f"{ready} of {len(slots)} workers ready"


async def _relay_signals(slots: list[_Slot], stopping: anyio.Event, drain_timeout: float) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            if not stopping.is_set():
                logger.warning(
                    "%s: draining %d workers (up to %.0f s)",
                    signal.Signals(received).name,
                    len(slots),
                    drain_timeout,
                )
                stopping.set()
                _send(slots, signal.SIGTERM)
            else:
                logger.warning("second signal: the workers leave their calls now")
                _send(slots, signal.SIGINT)


def _send(slots: list[_Slot], sig: signal.Signals) -> None:
    for slot in slots:
        if slot.process is not None and slot.process.returncode is None:
            try:
                slot.process.send_signal(sig)
            except ProcessLookupError:
                pass


async def _run_slot(
    slot: _Slot,
    argv: Sequence[str],
    environ: dict[str, str],
    stopping: anyio.Event,
    metrics_dir: str,
) -> None:
    delay = RESTART_FIRST_S
    while not stopping.is_set():
        command = [*argv, "--worker-status", slot.status_file]
        started = anyio.current_time()
        process = await anyio.open_process(command, env=environ, stdout=None, stderr=None)
        slot.process = process
        logger.info("worker %d started (pid %d)", slot.index, process.pid)
        try:
            code = await process.wait()
        finally:
            mark_dead(process.pid, metrics_dir)
            slot.process = None
        slot.exit_codes.append(code)
        if stopping.is_set():
            logger.info("worker %d (pid %d) stopped with code %d", slot.index, process.pid, code)
            return
        if anyio.current_time() - started >= STABLE_S:
            delay = RESTART_FIRST_S
        slot.restarts += 1
        logger.warning(
            "worker %d (pid %d) exited with code %d; restarting it in %.0f s",
            slot.index,
            process.pid,
            code,
            delay,
        )
        with anyio.move_on_after(delay):
            await stopping.wait()
        delay = min(delay * 2, RESTART_MAX_S)


def worker_command(args: Sequence[str]) -> list[str]:
    """The command line of one worker: this interpreter running ``telcoflow run``."""
    return [sys.executable, "-m", "telcoflow", *args]
