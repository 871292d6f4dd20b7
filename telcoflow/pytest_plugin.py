"""pytest plugin (registered by entry point): fixtures to test a voice agent on the sandbox.

Mark tests ``@pytest.mark.anyio`` (anyio's pytest plugin runs them on asyncio, or trio with the
``anyio_backend`` fixture). Fixtures:

- ``telcoflow_sandbox``: a running :class:`~telcoflow.sandbox.Sandbox`;
- ``telcoflow_config``: a :class:`~telcoflow.TelcoflowClientConfig` pointing at it;
- ``telcoflow_client``: a connected :class:`~telcoflow.TelcoflowClient`;
- ``telcoflow_inbox``: a :class:`~telcoflow.testing.CallInbox` of the client's calls;
- ``place_call``: ``await place_call(caller=Voice.tone(440), ...)`` places a simulated call;
- ``openai_standin`` / ``gemini_standin``: model stand-in servers for bridge tests, driven by
  the real ``openai`` / ``google-genai`` clients (extras ``openai`` / ``gemini``).

Assertions on what parties heard are in :mod:`telcoflow.testing`.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .client import TelcoflowClient
from .config import TelcoflowClientConfig
from .sandbox import Sandbox, SimCall
from .testing import CallInbox

if TYPE_CHECKING:  # the stand-ins import their model's wire types only when used
    from .testing.gemini_live import GeminiLiveStandIn
    from .testing.openai_realtime import OpenAIRealtimeStandIn

__all__ = [
    "fail_on_handler_errors",
    "gemini_standin",
    "openai_standin",
    "place_call",
    "telcoflow_client",
    "telcoflow_config",
    "telcoflow_inbox",
    "telcoflow_sandbox",
]


@pytest.fixture
async def telcoflow_sandbox() -> AsyncIterator[Sandbox]:
    """A sandbox on a free loopback port, for this test."""
    async with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def telcoflow_config(telcoflow_sandbox: Sandbox) -> TelcoflowClientConfig:
    """Client configuration for the test's sandbox (API-key auth, 24 kHz, mixed audio)."""
    return TelcoflowClientConfig.sandbox(
        api_key=telcoflow_sandbox.api_key,
        connector_uuid=telcoflow_sandbox.connector_uuid,
        base_url=telcoflow_sandbox.base_url,
    )


@pytest.fixture
async def telcoflow_client(
    telcoflow_config: TelcoflowClientConfig,
) -> AsyncIterator[TelcoflowClient]:
    """A client connected to the test's sandbox; register your agent with ``client.on``.

    An agent that raises fails the test (at its teardown), with the agent's traceback: the
    client itself survives a handler that raises, so without this a broken agent would pass.
    """
    async with TelcoflowClient(telcoflow_config) as client:
        yield client
    fail_on_handler_errors(client)


def fail_on_handler_errors(client: TelcoflowClient) -> None:
    """``pytest.fail`` with the traceback of the first handler that raised, if any did."""
    if not client.handler_errors:
        return
    call_id, exc = client.handler_errors[0]
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    more = len(client.handler_errors) - 1
    also = f" (and {more} more handler failures)" if more else ""
    pytest.fail(f"the agent raised on call {call_id}{also}:\n{trace}", pytrace=False)


@pytest.fixture
def telcoflow_inbox(telcoflow_client: TelcoflowClient) -> Iterator[CallInbox]:
    """The calls offered to ``telcoflow_client``, in order: ``call = await inbox.next()``."""
    with CallInbox(telcoflow_client) as inbox:
        yield inbox


@pytest.fixture
def place_call(telcoflow_sandbox: Sandbox) -> Callable[..., Awaitable[SimCall]]:
    """``await place_call(**CallSpec fields)`` places a simulated inbound call."""

    async def place(**fields: Any) -> SimCall:
        return await telcoflow_sandbox.create_call(**fields)

    return place


@pytest.fixture
async def openai_standin() -> AsyncIterator[OpenAIRealtimeStandIn]:
    """An :class:`~telcoflow.testing.openai_realtime.OpenAIRealtimeStandIn` on a free loopback
    port: ``AsyncOpenAI(base_url=openai_standin.base_url, api_key=openai_standin.api_key)``."""
    from .testing.openai_realtime import OpenAIRealtimeStandIn

    async with OpenAIRealtimeStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def gemini_standin() -> AsyncIterator[GeminiLiveStandIn]:
    """A :class:`~telcoflow.testing.gemini_live.GeminiLiveStandIn` on a free loopback port,
    over TLS: ``gemini_standin.client()`` is a google-genai client pointed at it (or pass
    ``base_url`` and ``client_ssl_context()`` in ``HttpOptions`` yourself)."""
    from .testing.gemini_live import GeminiLiveStandIn

    async with GeminiLiveStandIn() as stand_in:
        yield stand_in
