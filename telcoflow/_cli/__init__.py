"""The ``telcoflow`` command: ``demo``, ``run`` (an agent, in production or against a sandbox),
``sandbox serve`` and the client subcommands of a running sandbox
(``sandbox call|calls|hangup|recording``), one module each."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from . import run as run_module
from ._backend import BACKENDS, add_backend_option, missing_backend
from .run import add_run_options, run
from .sandbox_client import add_commands as add_sandbox_client_commands
from .serve import add_serve_options, serve

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(backend=args.backend, sample_rate=args.sample_rate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telcoflow", description="Telcoflow voice-agent SDK tools"
    )
    parser.add_argument("--version", action="version", version=f"telcoflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="async backend to run on (uvloop: asyncio on uvloop's loop)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run one simulated call through an example agent")
    demo.add_argument("--sample-rate", type=int, choices=(8000, 16000, 24000), default=24000)
    add_backend_option(demo, "the demo")
    demo.set_defaults(func=_demo)

    run_parser = commands.add_parser(
        "run",
        help="run an agent (module:handler): production, workers, or against a sandbox",
        description=run_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(run_parser)
    run_parser.set_defaults(func=run)

    sandbox = commands.add_parser("sandbox", help="the local Telcoflow server")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    serve_parser = sandbox_commands.add_parser("serve", help="serve until interrupted")
    add_serve_options(serve_parser)
    add_backend_option(serve_parser, "the sandbox")
    serve_parser.set_defaults(func=serve)
    add_sandbox_client_commands(sandbox_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``telcoflow`` console script."""
    args = _parser().parse_args(argv)
    hint = missing_backend(args.backend)
    if hint is not None:
        print(f"telcoflow: {args.backend} is not installed; {hint}", file=sys.stderr)
        return 2
    if args.command != "run":  # run configures its own (text or JSON, with call ids)
        level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
