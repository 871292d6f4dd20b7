"""Benchmark client: this SDK answering every call and echoing what it hears, until SIGTERM.

The agent is the README's echo: ``async for chunk in call.audio_stream(): await
call.send_audio(chunk)``. Prints a ``ready`` line once the control connection is up and a
``done`` line (CPU time, peak RSS, counts) when stopped; see ``_report.py``.

    python benchmarks/client_ours.py --base-url ws://127.0.0.1:PORT --backend trio \
        [--cprofile out.prof]
"""

from __future__ import annotations

import argparse
import signal
import sys

import anyio
from _report import LAG_PROBE_S, Probe, Tally, print_done, print_ready, print_window

from telcoflow import (
    ActiveCall,
    BufferClosedError,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSError,
    events,
)

KIND = "ours"


async def measure_lag(probe: Probe) -> None:
    while True:
        t = anyio.current_time()
        await anyio.sleep(LAG_PROBE_S)
        probe.lag(anyio.current_time() - t - LAG_PROBE_S)


async def run(args: argparse.Namespace, tally: Tally) -> None:
    config = TelcoflowClientConfig.sandbox(
        api_key=args.api_key,
        connector_uuid=args.connector_uuid,
        base_url=args.base_url,
        sample_rate=args.sample_rate,
    )
    client = TelcoflowClient(config)

    async def agent(call: ActiveCall) -> None:
        tally.calls += 1
        try:
            await call.answer()
            tally.answered += 1
            async for chunk in call.audio_stream():
                tally.chunks_in += 1
                await call.send_audio(chunk)
                tally.bytes_out += len(chunk)
        except BufferClosedError:
            pass  # heard before the hang-up, echoed after it
        except WSSError as exc:
            tally.error(f"{call.call_id}: {exc!r}")
        finally:
            tally.ended += 1

    client.on(events.INCOMING_CALL, agent)
    probe = Probe()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async with client, anyio.create_task_group() as tg:
            tg.start_soon(measure_lag, probe)
            print_ready(f"{KIND}-{args.backend}")
            async for signum in signals:
                if signum != signal.SIGUSR1:
                    break
                print_window(probe)
            tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sandbox-api-key")
    parser.add_argument("--connector-uuid", default="00000000-0000-4000-8000-000000000001")
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--backend", choices=["asyncio", "trio", "uvloop"], default="asyncio")
    parser.add_argument("--cprofile", metavar="FILE", help="write cProfile stats here")
    args = parser.parse_args(argv)
    tally = Tally()
    # uvloop is asyncio with another event loop: anyio's use_uvloop option.
    backend = "asyncio" if args.backend == "uvloop" else args.backend
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(anyio.run, run, args, tally, backend=backend, backend_options=options)
        profiler.dump_stats(args.cprofile)
    else:
        anyio.run(run, args, tally, backend=backend, backend_options=options)
    print_done(f"{KIND}-{args.backend}", tally)
    return 0


if __name__ == "__main__":
    sys.exit(main())
