"""``telcoflow run module:handler``: run an agent, in production or against a local sandbox.

The handler is the object ``client.on(INCOMING_CALL, ...)`` takes (an ``async def
agent(call)``). Configuration comes from flags, else the environment: ``TELCOFLOW_API_KEY`` and
``TELCOFLOW_CONNECTOR_UUID`` (API key), or ``TELCOFLOW_CERT_PATH`` and ``TELCOFLOW_KEY_PATH``
(mutual TLS); ``TELCOFLOW_CA_PATH``, ``TELCOFLOW_BASE_URL``. Credentials given as flags are
passed to workers in their environment, never on a command line others can read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import anyio

from ._backend import add_backend_option, run_async

__all__ = ["add_run_options", "run"]

ENV = {
    "api_key": "TELCOFLOW_API_KEY",
    "connector_uuid": "TELCOFLOW_CONNECTOR_UUID",
    "cert": "TELCOFLOW_CERT_PATH",
    "key": "TELCOFLOW_KEY_PATH",
    "ca": "TELCOFLOW_CA_PATH",
    "base_url": "TELCOFLOW_BASE_URL",
}


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return n


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {value!r}")
    return n


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:HANDLER", help="the agent, e.g. agent:answer")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="development mode: start a local sandbox and run the agent against it",
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=1, help="agent processes on the connector (1)"
    )
    parser.add_argument(
        "--max-calls", type=_positive_int, help="calls one process takes at once at most"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="on SIGTERM, how long calls in hand get to end before the agent leaves them (600)",
    )
    parser.add_argument("--http-host", default="127.0.0.1", help="health server address")
    parser.add_argument(
        "--http-port", type=_port, help="serve /healthz, /readyz and /metrics on this port"
    )
    add_backend_option(parser, "the agent")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="(info; -v: debug)"
    )
    parser.add_argument("--sample-rate", type=int, choices=(8000, 16000, 24000), default=24000)
    parser.add_argument("--audio-mode", choices=("mixed", "isolated"), default="mixed")
    parser.add_argument("--api-key", help=f"(default: ${ENV['api_key']})")
    parser.add_argument("--connector-uuid", help=f"(default: ${ENV['connector_uuid']})")
    parser.add_argument("--cert", help=f"client certificate, mutual TLS (${ENV['cert']})")
    parser.add_argument("--key", help=f"its private key (${ENV['key']})")
    parser.add_argument("--ca", help=f"extra CA to trust (${ENV['ca']})")
    parser.add_argument("--base-url", help=f"the service (${ENV['base_url']}, else production)")
    parser.add_argument("--no-watchdog", action="store_true", help="no event-loop watchdog")
    parser.add_argument("--worker-status", help=argparse.SUPPRESS)  # set by the supervisor


def _value(args: argparse.Namespace, name: str) -> str | None:
    given = getattr(args, name)
    return given if given else os.environ.get(ENV[name]) or None


def _config(args: argparse.Namespace, overrides: dict[str, str] | None = None) -> Any:
    from ..config import TelcoflowClientConfig

    values = {name: _value(args, name) for name in ENV}
    values.update(overrides or {})
    options: dict[str, Any] = {
        "sample_rate": args.sample_rate,
        "audio_mode": args.audio_mode,
        "max_calls": args.max_calls,
    }
    if values["base_url"]:
        options["base_url"] = values["base_url"]
    if values["ca"]:
        options["ca_path"] = values["ca"]
    if values["api_key"] or values["connector_uuid"]:
        if not (values["api_key"] and values["connector_uuid"]):
            raise ValueError(f"set both {ENV['api_key']} and {ENV['connector_uuid']}")
        return TelcoflowClientConfig.sandbox(
            api_key=values["api_key"], connector_uuid=values["connector_uuid"], **options
        )
    if values["cert"] or values["key"]:
        if not (values["cert"] and values["key"]):
            raise ValueError(f"set both {ENV['cert']} and {ENV['key']}")
        return TelcoflowClientConfig.production(
            cert_path=values["cert"], key_path=values["key"], **options
        )
    raise ValueError(
        f"no credentials: set {ENV['api_key']} and {ENV['connector_uuid']} (or "
        f"{ENV['cert']} and {ENV['key']}), or try it with --sandbox"
    )


def _worker_args(args: argparse.Namespace) -> list[str]:
    """A worker's ``telcoflow`` arguments: the agent's options, no credentials."""
    out = ["--backend", args.backend, "run", args.target]
    out += ["--drain-timeout", str(args.drain_timeout), "--log-format", args.log_format]
    if args.log_level:
        out += ["--log-level", args.log_level]
    out += ["--sample-rate", str(args.sample_rate), "--audio-mode", args.audio_mode]
    if args.max_calls:
        out += ["--max-calls", str(args.max_calls)]
    if args.no_watchdog:
        out.append("--no-watchdog")
    return out


def _worker_env(args: argparse.Namespace) -> dict[str, str]:
    return {ENV[name]: value for name in ENV if (value := _value(args, name))}


def _print_sandbox(sb: Any) -> None:
    print(f"telcoflow run: a sandbox on {sb.base_url} (development mode)", flush=True)
    print(
        f"  place a call:  telcoflow sandbox call --url {sb.http_url} --follow\n"
        f"  or:            curl -X POST {sb.http_url}/sandbox/calls -d '{{}}'",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """``telcoflow run``."""
    from ..runner import AgentOptions, configure_logging, load_handler, serve_agent, supervise

    if args.log_level:
        level = getattr(logging, args.log_level.upper())
    else:
        level = logging.DEBUG if getattr(args, "verbose", 0) > 1 else logging.INFO
    configure_logging(level, args.log_format)
    try:
        handler = load_handler(args.target)
    except ValueError as exc:
        print(f"telcoflow run: {exc}", file=sys.stderr)
        return 2
    options = AgentOptions(
        drain_timeout=args.drain_timeout,
        http_host=args.http_host,
        http_port=args.http_port if args.workers == 1 else None,
        status_file=args.worker_status,
        supervisor_pid=os.getppid() if args.worker_status else None,
        watchdog=not args.no_watchdog,
    )
    if args.workers == 1 and not args.sandbox:
        try:
            config = _config(args)
        except ValueError as exc:
            print(f"telcoflow run: {exc}", file=sys.stderr)
            return 2
        return _run_guarded(
            lambda: run_async(serve_agent, handler, config, options, backend=args.backend)
        )

    async def with_sandbox() -> int:
        from ..sandbox import Sandbox

        async with Sandbox() as sb:
            _print_sandbox(sb)
            overrides = {
                "base_url": sb.base_url,
                "api_key": sb.api_key,
                "connector_uuid": sb.connector_uuid,
            }
            if args.workers == 1:
                return await serve_agent(handler, _config(args, overrides), options)
            env = {ENV[k]: v for k, v in overrides.items()}
            return await supervise(
                worker_command(_worker_args(args)),
                args.workers,
                drain_timeout=args.drain_timeout,
                http_host=args.http_host,
                http_port=args.http_port,
                env=env,
            )

    from ..runner import worker_command

    if args.sandbox:
        backend = args.backend if args.workers == 1 else "asyncio"
        return _run_guarded(lambda: run_async(with_sandbox, backend=backend))
    try:
        _config(args)  # the workers would fail the same way: say it once, here
    except ValueError as exc:
        print(f"telcoflow run: {exc}", file=sys.stderr)
        return 2
    return _run_guarded(
        lambda: anyio.run(
            lambda: supervise(
                worker_command(_worker_args(args)),
                args.workers,
                drain_timeout=args.drain_timeout,
                http_host=args.http_host,
                http_port=args.http_port,
                env=_worker_env(args),
            )
        )
    )


def _run_guarded(main: Any) -> int:
    from ..exceptions import WSSError

    try:
        return int(main())
    except WSSError as exc:
        print(f"telcoflow run: {exc}", file=sys.stderr)
        return 1
