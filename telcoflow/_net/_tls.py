"""TLS contexts for the client (server verification, mutual TLS) and the sandbox server."""

from __future__ import annotations

import ssl

__all__ = ["client_ssl_context"]


def client_ssl_context(
    *, ca_path: str | None = None, cert_path: str | None = None, key_path: str | None = None
) -> ssl.SSLContext:
    """A context that verifies the server (system CAs plus ``ca_path``), presenting a client
    certificate when ``cert_path``/``key_path`` are given (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_path is not None:
        context.load_verify_locations(cafile=ca_path)
    if cert_path is not None:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    return context
