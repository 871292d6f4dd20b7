"""Shared fixtures: every async test runs under asyncio and trio against a real sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from telcoflow import TelcoflowClient, TelcoflowClientConfig
from telcoflow.sandbox import Sandbox
from telcoflow.testing import CallInbox


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


@pytest.fixture
async def client(
    make_config: Callable[..., TelcoflowClientConfig],
) -> AsyncIterator[TelcoflowClient]:
    async with TelcoflowClient(make_config()) as c:
        yield c


@pytest.fixture
def inbox(client: TelcoflowClient) -> Iterator[CallInbox]:
    with CallInbox(client) as box:
        yield box
