"""The benchmark's sandbox process: ``Sandbox(record=False)`` on a free port until SIGTERM.

Prints one JSON line (``base_url``, ``http_url``, ``api_key``, ``connector_uuid``) once it is
listening, so that the orchestrator (``bench.py``) can point the client process at it, and on
each SIGUSR1 a ``window`` line: its event-loop lag and garbage-collector pauses since the last
(``_report.py``): a late tick of its media clock is a gap for every call, whoever is to blame.
It keeps no recordings, so that its memory stays flat however many calls run, and it runs in a
process of its own, so that its CPU time is measured apart from the client's.

    python benchmarks/sandbox_server.py [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import anyio
from _report import LAG_PROBE_S, Probe, print_window

from telcoflow.sandbox import Sandbox


async def measure_lag(probe: Probe) -> None:
    while True:
        t = anyio.current_time()
        await anyio.sleep(LAG_PROBE_S)
        probe.lag(anyio.current_time() - t - LAG_PROBE_S)


async def serve(host: str) -> None:
    probe = Probe()
    async with Sandbox(host, 0, record=False) as sb, anyio.create_task_group() as tg:
        tg.start_soon(measure_lag, probe)
        ready = {
            "base_url": sb.base_url,
            "http_url": sb.http_url,
            "api_key": sb.api_key,
            "connector_uuid": sb.connector_uuid,
        }
        print(json.dumps(ready), flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum != signal.SIGUSR1:
                    break
                print_window(probe)
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    anyio.run(serve, args.host, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
