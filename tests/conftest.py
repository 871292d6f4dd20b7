"""Shared fixtures: every async test runs under asyncio and trio against a real sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from telcoflow import ActiveCall, TelcoflowClient, TelcoflowClientConfig, events
from telcoflow.sandbox import Sandbox

#: Every wait in a test is bounded by this; a test that hits it fails instead of hanging.
WAIT = 10.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends, always: trio is a required test dependency, so its runs cannot vanish."""
    return str(request.param)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sb:
        yield sb


@pytest.fixture
def make_config(sandbox: Sandbox) -> Callable[..., TelcoflowClientConfig]:
    def make(**options: Any) -> TelcoflowClientConfig:
        options.setdefault("base_url", sandbox.base_url)
        return TelcoflowClientConfig.sandbox(
            api_key=options.pop("api_key", sandbox.api_key),
            connector_uuid=options.pop("connector_uuid", sandbox.connector_uuid),
            **options,
        )

    return make


class CallInbox:
    """Collects the calls a client is offered, in order, for a test to take one by one."""

    def __init__(self, client: TelcoflowClient) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[ActiveCall](100)
        client.on(events.INCOMING_CALL, self.send.send_nowait)

    async def next(self, timeout: float = WAIT) -> ActiveCall:
        with anyio.fail_after(timeout):
            return await self.receive.receive()

    def close(self) -> None:
        self.send.close()
        self.receive.close()


@pytest.fixture
async def client(
    make_config: Callable[..., TelcoflowClientConfig],
) -> AsyncIterator[TelcoflowClient]:
    async with TelcoflowClient(make_config()) as c:
        yield c


@pytest.fixture
def inbox(client: TelcoflowClient) -> CallInbox:
    box = CallInbox(client)
    yield box  # type: ignore[misc]
    box.close()
