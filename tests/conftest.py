"""Shared fixtures: every async test runs under asyncio and trio against a real sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sniffio

from telcoflow import TelcoflowClient, TelcoflowClientConfig
from telcoflow.sandbox import Sandbox
from telcoflow.testing import CallInbox

__all__ = ["WAIT", "CallInbox", "live_task_names", "serving"]

#: Every wait in a test is bounded by this; a test that hits it fails instead of hanging.
WAIT = 10.0


def live_task_names() -> list[str]:
    """The names of every live task of the running event loop (both backends name a task after
    its function, ``module.qualname``)."""
    if sniffio.current_async_library() == "trio":
        import trio

        def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
            yield task
            for nursery in task.child_nurseries:
                for child in nursery.child_tasks:
                    yield from walk(child)

        return [t.name for t in walk(trio.lowlevel.current_root_task())]
    import asyncio

    return [t.get_name() for t in asyncio.all_tasks() if not t.done()]


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


@asynccontextmanager
async def serving(
    config: TelcoflowClientConfig,
) -> AsyncIterator[tuple[TelcoflowClient, CallInbox]]:
    """A client of its own (custom options), with an inbox of the calls it is offered."""
    async with TelcoflowClient(config) as client:
        with CallInbox(client) as inbox:
            yield client, inbox
