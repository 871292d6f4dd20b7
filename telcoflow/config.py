"""Client configuration: credentials, audio format and the knobs of the connection layer."""

from __future__ import annotations

import os
from typing import Any, Literal

import attrs

from ._core import PROTOCOL_SDK_VERSION, REQUEST_TIMEOUT_S, SAMPLE_RATES, AudioMode
from ._net._backoff import ReconnectPolicy, positive
from ._net._tls import check_ca_file, check_client_pair

__all__ = ["DEFAULT_BASE_URL", "ReconnectPolicy", "TelcoflowClientConfig"]

# Public classes defined in private modules name the module users import them from (in reprs,
# tracebacks, pickles and generated docs).
for _public in (ReconnectPolicy,):
    _public.__module__ = __name__

#: The hosted service's production endpoint (the official client's default too).
#: ``TELCOFLOW_BASE_URL`` overrides it when no ``base_url`` is given.
DEFAULT_BASE_URL = "wss://wss-prod.agentao.com"
BASE_URL_ENV = "TELCOFLOW_BASE_URL"
#: An extra CA to trust when no ``ca_path`` is given (a local TLS sandbox's, say), so that an
#: application can be pointed at another server without a change to its code.
CA_PATH_ENV = "TELCOFLOW_CA_PATH"

#: A command unanswered for five minutes is a dead server, not a slow one; the bound also keeps
#: connect's timeout (ring time + this) within the protocol's limit.
MAX_COMMAND_TIMEOUT = 300.0

#: Ten seconds of audio at 24 kHz (48,000 bytes a second): a voice model's answer is queued whole
#: ahead of playout; an interruption drops it locally at once, so its size costs nothing then.
DEFAULT_SEND_BUFFER_BYTES = 10 * 48_000


def _readable(name: str, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{name} {path!r} cannot be read: {exc.strerror}") from None


def _base_url_or_env(value: str | None) -> str:
    """An explicit ``base_url`` wins; else ``TELCOFLOW_BASE_URL``; else the hosted service."""
    if value is None:
        return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return value


def _ca_path_or_env(value: str | None) -> str | None:
    """An explicit ``ca_path`` wins; else ``TELCOFLOW_CA_PATH``; else none (system CAs)."""
    if value is None:
        return os.environ.get(CA_PATH_ENV) or None
    return value


def _convert_reconnect(value: ReconnectPolicy | dict[str, Any] | None) -> ReconnectPolicy:
    if value is None:
        return ReconnectPolicy()
    if isinstance(value, dict):
        return ReconnectPolicy(**value)
    return value


@attrs.frozen(kw_only=True)
class TelcoflowClientConfig:
    """Everything a :class:`~telcoflow.TelcoflowClient` needs. Build it with :meth:`sandbox` (API
    key) or :meth:`production` (mutual TLS). Invalid values raise ``ValueError`` naming the field.
    The repr never shows the API key.
    """

    auth: Literal["api_key", "mtls"]
    api_key: str | None = attrs.field(default=None, repr=False)
    connector_uuid: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    sample_rate: int = 24000
    base_url: str = attrs.field(default=None, converter=_base_url_or_env)
    audio_mode: AudioMode = attrs.field(default=AudioMode.MIXED)
    ca_path: str | None = attrs.field(default=None, converter=_ca_path_or_env)
    send_buffer_bytes: int = DEFAULT_SEND_BUFFER_BYTES
    command_timeout: float = attrs.field(default=10.0, validator=positive)
    reconnect: ReconnectPolicy = attrs.field(default=None, converter=_convert_reconnect)
    connect_timeout: float = attrs.field(default=10.0, validator=positive)
    ping_interval: float = attrs.field(default=20.0, validator=positive)
    ping_timeout: float = attrs.field(default=10.0, validator=positive)
    #: Inbound audio chunks kept for ``audio_stream()`` before the oldest are dropped (20 ms each:
    #: 10 s by default, so an agent that starts iterating late loses nothing).
    audio_queue_chunks: int = 500
    #: Calls this process takes at once at most (claimed and not yet ended); past it, it claims
    #: no new call and leaves it to the connector's other processes. None: no limit.
    max_calls: int | None = None
    #: How long a control-plane request (claiming a call, dialling, the call flow) waits for
    #: its response.
    request_timeout: float = attrs.field(default=REQUEST_TIMEOUT_S, validator=positive)
    #: ``x-sdk-version`` on every upgrade and REST request: the protocol version spoken.
    sdk_version: str = PROTOCOL_SDK_VERSION
    #: Allow a call's media over plain ``ws://`` when the control connection is ``wss://``.
    #: Off: a server that offers such a call is refused (the token and the audio would travel
    #: in clear text).
    allow_insecure_media: bool = False

    def __attrs_post_init__(self) -> None:
        try:
            object.__setattr__(self, "audio_mode", AudioMode(self.audio_mode))
        except ValueError:
            raise ValueError(
                f"audio_mode must be 'mixed' or 'isolated', not {self.audio_mode!r}"
            ) from None
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be 8000, 16000 or 24000, not {self.sample_rate!r}")
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("ws://", "wss://")):
            raise ValueError(f"base_url must start with ws:// or wss://, not {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.auth == "api_key":
            for name in ("api_key", "connector_uuid"):
                value = getattr(self, name)
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{name} is required for API-key (sandbox) authentication")
        elif self.auth == "mtls":
            if not self.cert_path or not self.key_path:
                missing = "cert_path" if not self.cert_path else "key_path"
                raise ValueError(
                    f"{missing} is required for mutual-TLS (production) authentication"
                )
            if self.base_url.startswith("ws://"):
                raise ValueError(
                    "base_url must be wss:// for mutual-TLS (production) authentication"
                )
        else:
            raise ValueError(f"auth must be 'api_key' or 'mtls', not {self.auth!r}")
        _readable("cert_path", self.cert_path)
        _readable("key_path", self.key_path)
        _readable("ca_path", self.ca_path)
        if self.ca_path is not None:
            check_ca_file("ca_path", self.ca_path)
        if self.auth == "mtls" and self.cert_path and self.key_path:
            check_client_pair(self.cert_path, self.key_path)
        if self.command_timeout > MAX_COMMAND_TIMEOUT:
            raise ValueError(
                f"command_timeout must be at most {MAX_COMMAND_TIMEOUT:g} s, "
                f"not {self.command_timeout!r}"
            )
        sb = self.send_buffer_bytes
        if isinstance(sb, bool) or not isinstance(sb, int) or sb < 2 or sb % 2:
            raise ValueError(f"send_buffer_bytes must be a positive even integer, not {sb!r}")
        q = self.audio_queue_chunks
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"audio_queue_chunks must be a positive integer, not {q!r}")
        m = self.max_calls
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"max_calls must be a positive integer or None, not {m!r}")
        v = self.sdk_version
        if not isinstance(v, str) or not v or any(c in v for c in "\r\n"):
            raise ValueError(f"sdk_version must be a non-empty header value, not {v!r}")
        if not isinstance(self.allow_insecure_media, bool):
            raise ValueError("allow_insecure_media must be a boolean")

    @classmethod
    def sandbox(
        cls, *, api_key: str, connector_uuid: str, sample_rate: int = 24000, **options: Any
    ) -> TelcoflowClientConfig:
        """API-key authentication (the sandbox environment, or a local ``telcoflow.sandbox``)."""
        return cls(
            auth="api_key",
            api_key=api_key,
            connector_uuid=connector_uuid,
            sample_rate=sample_rate,
            **options,
        )

    @classmethod
    def production(
        cls, *, cert_path: str, key_path: str, sample_rate: int = 24000, **options: Any
    ) -> TelcoflowClientConfig:
        """Mutual-TLS authentication: the client certificate identifies the connector."""
        return cls(
            auth="mtls", cert_path=cert_path, key_path=key_path, sample_rate=sample_rate, **options
        )

    @property
    def rest_url(self) -> str:
        """The REST plane's root: the same host over ``https://`` (``http://`` for ``ws://``)."""
        return "http" + self.base_url.removeprefix("ws")

    @property
    def bytes_per_second(self) -> int:
        """Bytes of PCM16 mono per second at this sample rate."""
        return self.sample_rate * 2
