"""The client's TLS context (server verification, mutual TLS) and checks of its files.

A certificate, key or CA file that cannot be used is reported naming the file (by its
configuration field) and the cause, when the configuration is made: OpenSSL's own messages
(``[SSL] PEM lib``, ``KEY_VALUES_MISMATCH``) name neither.
"""

from __future__ import annotations

import ssl

__all__ = ["check_ca_file", "check_client_pair", "client_ssl_context"]


def client_ssl_context(
    *, ca_path: str | None = None, cert_path: str | None = None, key_path: str | None = None
) -> ssl.SSLContext:
    """A context that verifies the server (system CAs plus ``ca_path``), presenting a client
    certificate when ``cert_path``/``key_path`` are given (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_path is not None:
        context.load_verify_locations(cafile=ca_path)
    if cert_path is not None:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path, password=_no_password)
    return context


def _no_password() -> bytes:
    # Called by OpenSSL for an encrypted key: refuse rather than prompt on the terminal.
    raise ValueError("the key is encrypted")


def _text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("ascii", errors="replace")


def _certificates_problem(path: str) -> str | None:
    """Why ``path`` is not a PEM file of certificates, or None."""
    text = _text(path)
    if "-----BEGIN CERTIFICATE-----" not in text:
        if "PRIVATE KEY-----" in text:
            return "it holds a private key, not a certificate"
        return "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    try:
        ssl.create_default_context(cadata=text[text.index("-----BEGIN CERTIFICATE-----") :])
    except ssl.SSLError as exc:
        return f"its certificate cannot be parsed ({exc.reason or exc})"
    return None


def check_ca_file(field: str, path: str) -> None:
    """``ValueError`` naming ``field`` and ``path`` if they are not usable as trusted CAs."""
    problem = _certificates_problem(path)
    if problem is not None:
        raise ValueError(f"{field} {path!r} is not a CA certificate: {problem}")


def check_client_pair(cert_path: str, key_path: str) -> None:
    """``ValueError`` naming the file at fault if ``cert_path``/``key_path`` are not a client
    certificate and its unencrypted private key."""
    problem = _certificates_problem(cert_path)
    if problem is not None:
        raise ValueError(f"cert_path {cert_path!r} is not a client certificate: {problem}")
    key = _text(key_path)
    if "ENCRYPTED" in key:
        raise ValueError(
            f"key_path {key_path!r} is encrypted with a passphrase; the SDK needs the key "
            "unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`)"
        )
    if "PRIVATE KEY-----" not in key:
        what = "a certificate" if "BEGIN CERTIFICATE" in key else "no PEM private key"
        raise ValueError(f"key_path {key_path!r} is not a private key: it holds {what}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path, password=_no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"key_path {key_path!r} is not the private key of cert_path {cert_path!r} "
                "(they do not match)"
            ) from None
        raise ValueError(
            f"cert_path {cert_path!r} with key_path {key_path!r} cannot be used: "
            f"{exc.reason or exc}"
        ) from None
