"""``telcoflow sandbox serve``: a local Telcoflow server from the command line."""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from .._version import __version__
from ._backend import run_async

__all__ = ["add_serve_options", "serve"]

#: The sandbox's port unless ``--port`` says otherwise.
DEFAULT_PORT = 8765


def port(value: str) -> int:
    """A TCP port number (0: any free one)."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {value!r}")
    return n


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


def _certificate_connector_uuid(path: str) -> str:
    """The connector an application's own certificate stands for: its subject's common name
    (the hosted service's certificates name the connector), else its fingerprint."""
    import hashlib
    import ssl

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with open(path, "rb") as f:
        data = f.read()
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"--client-cert {path!r} holds no PEM certificate") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str) and names[0].value:
        return names[0].value
    der = ssl.PEM_cert_to_DER_cert(data.decode("ascii", errors="replace"))
    return "cert-" + hashlib.sha256(der).hexdigest()[:16]


def serve(args: argparse.Namespace) -> int:
    """``telcoflow sandbox serve``: a sandbox until interrupted."""
    import secrets

    from ..sandbox import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, Connector, Retention, Sandbox

    extra = [Connector(key, uuid) for key, uuid in args.connector]
    try:
        for path in args.client_cert:
            uuid = _certificate_connector_uuid(path)
            # Known by its certificate alone; an API key nobody is told, so none works.
            extra.append(Connector(secrets.token_urlsafe(24), uuid, client_cert=path))
    except OSError as exc:
        print(f"telcoflow: --client-cert {exc.filename!r}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"telcoflow: {exc}", file=sys.stderr)
        return 2
    connectors = [Connector(DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID), *extra]
    token = args.admin_token or os.environ.get("TELCOFLOW_SANDBOX_TOKEN") or None
    try:
        sandbox = Sandbox(
            args.host,
            args.port,
            tls=args.tls or bool(args.client_cert),
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

    async def run() -> None:
        async with sandbox as sb:
            print(f"telcoflow sandbox {__version__} serving on {sb.base_url}")
            print(f"  HTTP API:       {sb.http_url}/sandbox/health")
            print(f"  api_key:        {sb.api_key}")
            print(f"  connector_uuid: {sb.connector_uuid}  (number {sb.number})")
            for c in sb.connectors[1:]:
                how = f"  by its certificate {c.client_cert}" if c.client_cert else ""
                print(f"  also accepting: {c.connector_uuid}  (number {c.number}){how}")
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
        run_async(run, backend=args.backend)
    except OSError as exc:
        print(
            f"telcoflow: cannot serve on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    return 0


def add_serve_options(serve_parser: argparse.ArgumentParser) -> None:
    """The options of ``telcoflow sandbox serve``."""
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=port, default=DEFAULT_PORT)
    serve_parser.add_argument("--tls", action="store_true", help="serve wss:// with a generated CA")
    serve_parser.add_argument(
        "--connector",
        type=_connector,
        action="append",
        default=[],
        metavar="API_KEY:CONNECTOR_UUID",
        help="accept these credentials too (repeatable; beside the sandbox's own pair), so an "
        "application's own configuration works against the sandbox unchanged",
    )
    serve_parser.add_argument(
        "--client-cert",
        action="append",
        default=[],
        metavar="CERT_PATH",
        help="accept this certificate (an application's production cert_path, PEM) as a "
        "connector over mutual TLS (repeatable; implies --tls): with TELCOFLOW_BASE_URL and "
        "TELCOFLOW_CA_PATH set to what the sandbox prints, the application runs unchanged",
    )
    serve_parser.add_argument(
        "--admin-token",
        help="require this token (Authorization: Bearer) on the HTTP API; needed to serve on "
        "an address other than loopback (default: $TELCOFLOW_SANDBOX_TOKEN)",
    )
    serve_parser.add_argument(
        "--no-record", action="store_true", help="keep no recordings (long runs, many calls)"
    )
    serve_parser.add_argument(
        "--keep-calls", type=_count, default=1000, metavar="N", help="ended calls kept (1000)"
    )
    serve_parser.add_argument(
        "--keep-recordings",
        type=_count,
        default=100,
        metavar="N",
        help="ended calls whose recordings are kept (100; about 8.6 MB per call-minute)",
    )
    serve_parser.add_argument(
        "--keep-minutes",
        type=float,
        default=60.0,
        metavar="T",
        help="forget ended calls after T minutes (60)",
    )
