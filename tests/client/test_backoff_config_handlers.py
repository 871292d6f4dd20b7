"""Reconnect backoff, client configuration and event-handler registries: pure, synchronous code."""

from __future__ import annotations

import enum
import logging
import random
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trustme

from telcoflow._handlers import HandlerRegistry, _takes_payload
from telcoflow._net._backoff import Backoff
from telcoflow.config import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    ReconnectPolicy,
    TelcoflowClientConfig,
)
from telcoflow.events import AudioMode, CallEvent, ClientEvent

# --- Backoff --------------------------------------------------------------------------------------


def test_backoff_delays_grow_by_half_and_cap_at_ten() -> None:
    backoff = Backoff(random=lambda: 0.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays[:8] == pytest.approx(
        [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875, 5.6953125, 8.54296875]
    )
    assert delays[8:] == [10.0] * 4
    assert backoff.attempts == 12


def test_backoff_jitter_stretches_up_to_twenty_percent() -> None:
    high = Backoff(random=lambda: 1.0)
    assert [high.next_delay() for _ in range(3)] == pytest.approx([0.6, 0.9, 1.35])
    mid = Backoff(random=lambda: 0.5)
    assert mid.next_delay() == pytest.approx(0.55)


def test_backoff_jitter_stays_within_bounds_with_the_real_random() -> None:
    backoff = Backoff()
    for attempt in range(40):
        base = min(10.0, 0.5 * 1.5**attempt)
        delay = backoff.next_delay()
        assert base <= delay <= base * 1.2


def test_backoff_is_deterministic_with_an_injected_random() -> None:
    a = Backoff(random=random.Random(42).random)
    b = Backoff(random=random.Random(42).random)
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_backoff_without_jitter() -> None:
    backoff = Backoff(ReconnectPolicy(jitter=0.0), random=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(3)] == pytest.approx([0.5, 0.75, 1.125])


def test_backoff_max_attempts() -> None:
    backoff = Backoff(ReconnectPolicy(max_attempts=3), random=lambda: 0.0)
    for _ in range(3):
        assert not backoff.exhausted
        backoff.next_delay()
    assert backoff.exhausted
    assert Backoff(ReconnectPolicy(max_attempts=0)).exhausted


def test_backoff_forever_is_never_exhausted() -> None:
    backoff = Backoff()
    for _ in range(100):
        backoff.next_delay()
    assert not backoff.exhausted


def _exhausted(backoff: Backoff) -> bool:
    """``backoff.exhausted`` read afresh: after ``assert backoff.exhausted`` mypy keeps the
    narrowed value across the ``reset()`` that changes it."""
    return backoff.exhausted


def test_backoff_reset_starts_again() -> None:
    backoff = Backoff(ReconnectPolicy(max_attempts=2), random=lambda: 0.0)
    backoff.next_delay()
    backoff.next_delay()
    assert backoff.exhausted
    backoff.reset()
    assert backoff.attempts == 0
    assert not _exhausted(backoff)
    assert backoff.next_delay() == 0.5


def test_backoff_follows_the_policy_it_is_given() -> None:
    backoff = Backoff(ReconnectPolicy(initial_delay=2.0, factor=2.0, max_delay=5.0, jitter=0.0))
    assert [backoff.next_delay() for _ in range(4)] == [2.0, 4.0, 5.0, 5.0]


def test_backoff_defaults_are_the_protocols() -> None:
    """PROTOCOL.md: 0.5 s start, factor 1.5, 10 s cap, jitter up to 20 %, retried forever."""
    policy = Backoff().policy
    assert policy == ReconnectPolicy()
    assert (policy.initial_delay, policy.factor, policy.max_delay, policy.jitter) == (
        0.5,
        1.5,
        10.0,
        0.2,
    )
    assert policy.max_attempts is None


# --- TelcoflowClientConfig ------------------------------------------------------------------------

API_KEY = "sk-live-5e1f0c-do-not-print"


@pytest.fixture(autouse=True)
def _no_base_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


@pytest.fixture
def cert_files(tmp_path: Path) -> tuple[str, str]:
    """A real certificate and its key: the configuration checks that they are a pair."""
    issued = trustme.CA().issue_cert("agent.example")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def sandbox(**options: Any) -> TelcoflowClientConfig:
    options.setdefault("api_key", API_KEY)
    options.setdefault("connector_uuid", "0b6c1a9e-connector")
    return TelcoflowClientConfig.sandbox(**options)


def test_sandbox_defaults() -> None:
    config = sandbox()
    assert config.auth == "api_key"
    assert config.api_key == API_KEY
    assert config.sample_rate == 24000
    assert config.bytes_per_second == 48_000
    assert config.audio_mode is AudioMode.MIXED
    assert config.base_url == DEFAULT_BASE_URL
    assert config.reconnect == ReconnectPolicy()


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_sample_rates_accepted(rate: int) -> None:
    assert sandbox(sample_rate=rate).bytes_per_second == rate * 2


@pytest.mark.parametrize("rate", [0, 44100, 22050, -24000, True, "24000", None])
def test_bad_sample_rate_names_the_field(rate: Any) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        sandbox(sample_rate=rate)


def test_float_sample_rate_is_refused() -> None:
    # 24000.0 passes a membership test, but the setup frame would then carry "sampleRate":
    # 24000.0 (which the server refuses: must be int), and MediaProtocol's frame size becomes
    # 960.0, so take_audio() fails with TypeError on range().
    with pytest.raises(ValueError, match="sample_rate"):
        sandbox(sample_rate=24000.0)


@pytest.mark.parametrize("field", ["api_key", "connector_uuid"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_sandbox_credentials_are_required(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        sandbox(**{field: value})


def test_audio_mode_is_converted_and_checked() -> None:
    assert sandbox(audio_mode="isolated").audio_mode is AudioMode.ISOLATED
    with pytest.raises(ValueError, match="audio_mode"):
        sandbox(audio_mode="stereo")


@pytest.mark.parametrize("url", ["http://localhost:8080", "localhost:8080", "", "WSS//x"])
def test_bad_base_url_names_the_field(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        sandbox(base_url=url)


def test_base_url_trailing_slash_is_dropped() -> None:
    assert sandbox(base_url="ws://127.0.0.1:8765/").base_url == "ws://127.0.0.1:8765"


def test_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "ws://127.0.0.1:9999")
    assert sandbox().base_url == "ws://127.0.0.1:9999"
    assert sandbox(base_url=None).base_url == "ws://127.0.0.1:9999"


def test_explicit_base_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "ws://127.0.0.1:9999")
    assert sandbox(base_url="wss://other.example").base_url == "wss://other.example"


def test_empty_environment_variable_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "")
    assert sandbox().base_url == DEFAULT_BASE_URL


def test_bad_base_url_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://nope")
    with pytest.raises(ValueError, match="base_url"):
        sandbox()


@pytest.mark.parametrize("size", [1, 3, 48_001, 0, -2, True, 2.0, "960"])
def test_send_buffer_bytes_must_be_a_positive_even_int(size: Any) -> None:
    with pytest.raises(ValueError, match="send_buffer_bytes"):
        sandbox(send_buffer_bytes=size)


def test_send_buffer_bytes_even_is_accepted() -> None:
    assert sandbox(send_buffer_bytes=2).send_buffer_bytes == 2


@pytest.mark.parametrize(
    "field", ["command_timeout", "connect_timeout", "ping_interval", "ping_timeout"]
)
@pytest.mark.parametrize("value", [0, -1.0, True, "10"])
def test_timeouts_must_be_positive(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        sandbox(**{field: value})


@pytest.mark.parametrize("chunks", [0, -1, True, 1.5])
def test_audio_queue_chunks_must_be_a_positive_int(chunks: Any) -> None:
    with pytest.raises(ValueError, match="audio_queue_chunks"):
        sandbox(audio_queue_chunks=chunks)


def test_repr_never_shows_the_api_key() -> None:
    config = sandbox(base_url="ws://127.0.0.1:1")
    assert API_KEY not in repr(config)
    assert API_KEY not in str(config)
    assert "0b6c1a9e-connector" in repr(config)


def test_production(cert_files: tuple[str, str]) -> None:
    cert, key = cert_files
    config = TelcoflowClientConfig.production(cert_path=cert, key_path=key)
    assert config.auth == "mtls"
    assert config.api_key is None
    assert config.base_url == DEFAULT_BASE_URL
    with_ca = TelcoflowClientConfig.production(cert_path=cert, key_path=key, ca_path=cert)
    assert with_ca.ca_path == cert


@pytest.mark.parametrize("missing", ["cert_path", "key_path"])
@pytest.mark.parametrize("value", [None, ""])
def test_production_needs_cert_and_key(
    cert_files: tuple[str, str], missing: str, value: Any
) -> None:
    paths: dict[str, Any] = dict(zip(("cert_path", "key_path"), cert_files, strict=True))
    paths[missing] = value
    with pytest.raises(ValueError, match=missing):
        TelcoflowClientConfig.production(**paths)


@pytest.mark.parametrize("unreadable", ["cert_path", "key_path", "ca_path"])
def test_production_files_must_be_readable(
    cert_files: tuple[str, str], tmp_path: Path, unreadable: str
) -> None:
    paths: dict[str, Any] = dict(zip(("cert_path", "key_path"), cert_files, strict=True))
    paths[unreadable] = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=rf"{unreadable} '.*missing\.pem' cannot be read"):
        TelcoflowClientConfig.production(**paths)


def test_production_needs_wss(cert_files: tuple[str, str]) -> None:
    cert, key = cert_files
    with pytest.raises(ValueError, match="wss://"):
        TelcoflowClientConfig.production(cert_path=cert, key_path=key, base_url="ws://x")


def test_unknown_auth_is_refused() -> None:
    with pytest.raises(ValueError, match="auth"):
        TelcoflowClientConfig(auth="password")  # type: ignore[arg-type]


def test_reconnect_policy_from_a_dict() -> None:
    config = sandbox(reconnect={"max_attempts": 3, "initial_delay": 1.0})
    assert config.reconnect == ReconnectPolicy(initial_delay=1.0, max_attempts=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_delay": 0}, "initial_delay"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"factor": 0.5}, "factor"),
        ({"factor": 0.9}, "factor"),
        ({"initial_delay": 5.0, "max_delay": 1.0}, "max_delay"),
        ({"jitter": 2}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
    ],
)
def test_reconnect_policy_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReconnectPolicy(**kwargs)
    with pytest.raises(ValueError, match=match):
        sandbox(reconnect=kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        sandbox().sample_rate = 8000  # type: ignore[misc]


# --- HandlerRegistry ------------------------------------------------------------------------------


def registry() -> HandlerRegistry:
    return HandlerRegistry((e.value for e in CallEvent), "call")


def test_unknown_event_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown call event 'call\.exploded'; known events: "):
        registry().on("call.exploded", lambda: None)
    with pytest.raises(ValueError, match=r"call\.answered"):
        registry().normalise("nope")


def test_enums_and_strings_are_accepted() -> None:
    reg = registry()
    assert reg.normalise(CallEvent.CALL_ANSWERED) == "call.answered"
    assert reg.normalise("call.answered") == "call.answered"

    class Other(enum.Enum):
        X = "call.terminated"

    assert reg.normalise(Other.X) == "call.terminated"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"call\.incoming"):
        reg.normalise(ClientEvent.INCOMING_CALL)


def test_on_registers_and_works_as_a_decorator() -> None:
    reg = registry()

    def first() -> None: ...

    assert reg.on(CallEvent.CALL_TERMINATED, first) is first

    @reg.on("call.terminated")
    def second(reason: str) -> None: ...

    assert [r.handler for r in reg.handlers("call.terminated")] == [first, second]
    assert [r.takes_payload for r in reg.handlers("call.terminated")] == [False, True]
    assert reg.handlers("call.answered") == []


def test_handlers_returns_a_copy() -> None:
    reg = registry()
    reg.on("call.answered", lambda: None)
    reg.handlers("call.answered").clear()
    assert len(reg.handlers("call.answered")) == 1


def test_non_callable_handler_is_refused() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        registry().on("call.answered", 42)  # type: ignore[call-overload]  # not callable: the point


def _two(a: Any, b: Any) -> None: ...


def _kw_only(*, k: Any) -> None: ...


def _kw_only_default(payload: Any, *, k: Any = 1) -> None: ...


@pytest.mark.parametrize("handler", [_two, _kw_only, lambda a, b, c=1: None])
def test_handlers_needing_more_than_one_argument_are_refused(handler: Any) -> None:
    with pytest.raises(ValueError, match="must take zero arguments or one"):
        registry().on("call.answered", handler)


class _Agent:
    def on_event(self, payload: Any) -> None: ...

    def on_bare(self) -> None: ...

    async def on_async(self, payload: Any) -> None: ...


@pytest.mark.parametrize(
    ("handler", "takes"),
    [
        (lambda: None, False),
        (lambda payload: None, True),
        (lambda payload=None: None, True),
        (lambda *args: None, True),
        (lambda **kwargs: None, False),
        (lambda payload, **kwargs: None, True),
        (_kw_only_default, True),
        (_Agent().on_event, True),
        (_Agent().on_bare, False),
        (_Agent().on_async, True),
    ],
)
def test_takes_payload(handler: Any, takes: bool) -> None:
    assert _takes_payload(handler) is takes


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fire_calls_sync_and_async_handlers_in_order(backend: str) -> None:
    reg = registry()
    calls: list[tuple[str, Any]] = []

    def sync_bare() -> None:
        calls.append(("sync_bare", None))

    def sync_payload(payload: Any) -> None:
        calls.append(("sync_payload", payload))

    async def async_bare() -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("async_bare", None))

    async def async_payload(payload: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("async_payload", payload))

    for handler in (sync_bare, async_payload, sync_payload, async_bare):
        reg.on("call.terminated", handler)
    logger = logging.getLogger("telcoflow.test")
    anyio.run(reg.fire, "call.terminated", "caller_hangup", logger, "call-1", backend=backend)
    assert calls == [
        ("sync_bare", None),
        ("async_payload", "caller_hangup"),
        ("sync_payload", "caller_hangup"),
        ("async_bare", None),
    ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_raising_handler_is_logged_not_propagated(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry()
    calls: list[str] = []

    def broken(payload: Any) -> None:
        raise RuntimeError("handler bug")

    async def broken_async() -> None:
        raise KeyError("async handler bug")

    reg.on("call.answered", broken)
    reg.on("call.answered", broken_async)
    reg.on("call.answered", lambda: calls.append("after"))
    logger = logging.getLogger("telcoflow.test")
    with caplog.at_level(logging.ERROR, logger="telcoflow.test"):
        anyio.run(reg.fire, "call.answered", None, logger, "call-7", backend=backend)
    assert calls == ["after"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["call-7: handler for call.answered raised"] * 2
    assert isinstance(caplog.records[0].exc_info[1], RuntimeError)  # type: ignore[index]
    assert isinstance(caplog.records[1].exc_info[1], KeyError)  # type: ignore[index]


def test_fire_without_handlers_does_nothing() -> None:
    anyio.run(registry().fire, "call.connected", None, logging.getLogger("x"), "ctx")
