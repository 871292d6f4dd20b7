"""The ``telcoflow`` command: ``demo``, ``sandbox serve`` and the client subcommands of a
running sandbox (``sandbox call|calls|hangup|recording``, in ``_sandbox_cli``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from ._sandbox_cli import add_commands as add_sandbox_client_commands
from ._version import __version__

__all__ = ["main"]


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count (0 or more), not {value!r}")
    return n


def _connector(value: str) -> tuple[str, str]:
    """``API_KEY:CONNECTOR_UUID`` (the key may not contain a colon; the uuid may)."""
    key, sep, uuid = value.partition(":")
    if not sep or not key or not uuid:
        raise argparse.ArgumentTypeError(f"expected API_KEY:CONNECTOR_UUID, not {value!r}")
    return key, uuid


def _serve(args: argparse.Namespace) -> int:
    from .sandbox import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, Connector, Retention, Sandbox

    extra = [Connector(key, uuid) for key, uuid in args.connector]
    connectors = [Connector(DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID), *extra]
    token = args.admin_token or os.environ.get("TELCOFLOW_SANDBOX_TOKEN") or None
    try:
        sandbox = Sandbox(
            args.host,
            args.port,
            tls=args.tls,
            connectors=connectors,
            record=not args.no_record,
            admin_token=token,
            retention=Retention(
                ended_calls=args.keep_calls,
                recordings=args.keep_recordings,
                max_age_s=None if args.keep_minutes is None else args.keep_minutes * 60,
            ),
        )
    except ValueError as exc:
        print(f"telcoflow: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        async with sandbox as sb:
            print(f"telcoflow sandbox {__version__} serving on {sb.base_url}")
            print(f"  HTTP API:       {sb.http_url}/sandbox/health")
            print(f"  api_key:        {sb.api_key}")
            print(f"  connector_uuid: {sb.connector_uuid}  (number {sb.number})")
            for c in sb.connectors[1:]:
                print(f"  also accepting: {c.connector_uuid}  (number {c.number})")
            if sb.tls:
                print(f"  CA:             {sb.ca_path}")
                print(f"  client cert:    {sb.client_cert_path}")
                print(f"  client key:     {sb.client_key_path}")
            if sb.admin_token:
                print("  HTTP API needs:  Authorization: Bearer <the admin token>")
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
    serve.add_argument(
        "--connector",
        type=_connector,
        action="append",
        default=[],
        metavar="API_KEY:CONNECTOR_UUID",
        help="accept these credentials too (repeatable; beside the sandbox's own pair), so an "
        "application's own configuration works against the sandbox unchanged",
    )
    serve.add_argument(
        "--admin-token",
        help="require this token (Authorization: Bearer) on the HTTP API; needed to serve on "
        "an address other than loopback (default: $TELCOFLOW_SANDBOX_TOKEN)",
    )
    serve.add_argument(
        "--no-record", action="store_true", help="keep no recordings (long runs, many calls)"
    )
    serve.add_argument(
        "--keep-calls", type=_count, default=1000, metavar="N", help="ended calls kept (1000)"
    )
    serve.add_argument(
        "--keep-recordings",
        type=_count,
        default=100,
        metavar="N",
        help="ended calls whose recordings are kept (100; about 8.6 MB per call-minute)",
    )
    serve.add_argument(
        "--keep-minutes",
        type=float,
        default=60.0,
        metavar="T",
        help="forget ended calls after T minutes (60)",
    )
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
