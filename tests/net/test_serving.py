"""The lifecycle the sandbox and the model stand-ins share (telcoflow._net._serving)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest

from telcoflow._net._serving import Serving, close_listener
from telcoflow._net._streams import open_listener
from telcoflow.sandbox import Sandbox

pytestmark = pytest.mark.anyio


def running(server: Serving) -> bool:
    """``server.running`` read afresh (mypy would keep a value narrowed before the block ends)."""
    return server.running


class Recorder(Serving):
    """Starts a listener and a task group; fails its start when asked."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.undone: list[str] = []

    async def _start(self, stack: AsyncExitStack) -> None:
        listener = await open_listener("127.0.0.1", 0)
        stack.push_async_callback(close_listener, listener)
        stack.callback(self.undone.append, "listener")
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        stack.callback(self.undone.append, "tasks")
        tg.start_soon(anyio.sleep_forever)
        if self.fail:
            raise RuntimeError("start failed")


async def test_stopping_undoes_everything_last_first_and_is_idempotent() -> None:
    server = Recorder()
    async with server:
        assert server.running
        with pytest.raises(RuntimeError, match="Recorder is already running"):
            await server.__aenter__()
    assert not running(server)
    assert server.undone == ["tasks", "listener"]
    await server.aclose()  # a second stop does nothing
    assert server.undone == ["tasks", "listener"]


async def test_a_start_that_fails_part_way_unwinds_what_it_started() -> None:
    server = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="start failed"):
        async with server:
            pytest.fail("the block must not run")  # pragma: no cover
    assert server.undone == ["tasks", "listener"]
    assert not running(server)


async def test_the_sandbox_is_one_of_them() -> None:
    sandbox = Sandbox()
    with pytest.raises(RuntimeError, match="not running"):
        await sandbox.create_call()
    async with sandbox:
        with pytest.raises(RuntimeError, match="Sandbox is already running"):
            await sandbox.__aenter__()
    assert not running(sandbox)
