"""The ``telcoflow`` command: ``demo``, ``sandbox serve`` and the client subcommands of a
running sandbox (``sandbox call|calls|hangup|recording``, in ``_sandbox_cli``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from ._sandbox_cli import add_commands as add_sandbox_client_commands
from ._version import __version__

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from .sandbox import Sandbox

    async def serve() -> None:
        async with Sandbox(args.host, args.port, tls=args.tls) as sb:
            print(f"telcoflow sandbox {__version__} serving on {sb.base_url}")
            print(f"  HTTP API:       {sb.http_url}/sandbox/health")
            print(f"  api_key:        {sb.api_key}")
            print(f"  connector_uuid: {sb.connector_uuid}")
            if sb.tls:
                print(f"  CA:             {sb.ca_path}")
                print(f"  client cert:    {sb.client_cert_path}")
                print(f"  client key:     {sb.client_key_path}")
            print(f"Point a client at it with TELCOFLOW_BASE_URL={sb.base_url}; Ctrl-C stops.")
            sys.stdout.flush()
            await anyio.sleep_forever()

    try:
        anyio.run(serve, backend=args.backend)
    except OSError as exc:
        print(
            f"telcoflow: cannot serve on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(backend=args.backend, sample_rate=args.sample_rate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telcoflow", description="Telcoflow voice-agent SDK tools"
    )
    parser.add_argument("--version", action="version", version=f"telcoflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend to run on"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run one simulated call through an example agent")
    demo.add_argument("--sample-rate", type=int, choices=(8000, 16000, 24000), default=24000)
    demo.set_defaults(func=_demo)

    sandbox = commands.add_parser("sandbox", help="the local Telcoflow server")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    serve = sandbox_commands.add_parser("serve", help="serve until interrupted")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--tls", action="store_true", help="serve wss:// with a generated CA")
    serve.set_defaults(func=_serve)
    add_sandbox_client_commands(sandbox_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``telcoflow`` console script."""
    args = _parser().parse_args(argv)
    if args.backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            hint = 'pip install "telcoflow[trio]"'
            print(f"telcoflow: trio is not installed; {hint}", file=sys.stderr)
            return 2
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
