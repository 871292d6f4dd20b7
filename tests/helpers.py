"""What the tests share besides fixtures: the bound on every wait, the live-task walker, a
client of one's own, an agent's echo of a call's audio.

Fixtures are in ``conftest.py`` (every async test runs under asyncio and trio against a real
sandbox); tests import these names from here, never from ``conftest``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import sniffio

from telcoflow import ActiveCall, CallState, TelcoflowClient, TelcoflowClientConfig
from telcoflow.testing import CallInbox

__all__ = ["WAIT", "CallInbox", "echo_audio", "live_task_names", "serving", "state_of"]

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

        root = trio.lowlevel.current_root_task()
        assert root is not None, "called from a running trio loop"
        return [t.name for t in walk(root)]
    import asyncio

    return [t.get_name() for t in asyncio.all_tasks() if not t.done()]


class _HasState(Protocol):
    @property
    def state(self) -> CallState: ...


def state_of(call: _HasState) -> CallState:
    """``call.state`` (an ``ActiveCall``'s or a ``SimCall``'s), read afresh: after an ``assert
    call.state is ...`` mypy keeps the narrowed state across an ``await`` that changes it."""
    return call.state


@asynccontextmanager
async def serving(
    config: TelcoflowClientConfig,
) -> AsyncIterator[tuple[TelcoflowClient, CallInbox]]:
    """A client of its own (custom options), with an inbox of the calls it is offered."""
    async with TelcoflowClient(config) as client:
        with CallInbox(client) as inbox:
            yield client, inbox


async def echo_audio(call: ActiveCall, chunks: int = 25) -> None:
    """Send the first ``chunks`` chunks of audio the agent hears back into ``call``, within
    ``WAIT``: the caller then hears its own voice (half a second of it, by default)."""
    echoed = 0
    with anyio.fail_after(WAIT):
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
            echoed += 1
            if echoed == chunks:
                break
