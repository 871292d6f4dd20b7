"""Benchmark client: the official asyncio SDK (``telcoflow`` 1.0.0 from the package registry),
whole, echoing every call until SIGTERM.

Run it with the Python of the virtual environment that ``nox -s bench`` makes for that SDK (its
import name, ``telcoflow``, is the same as ours). It runs the SDK as its README's Quick Start
does: a ``SessionManager`` on the sandbox's session-manager plane, ``open_session`` for each
``session.notify`` (a ``session.open`` request on the control connection), ``session.ready()``,
then in ``on_incoming_call``: ``answer()``, ``async for chunk in call.audio_stream(): await
call.send_audio(chunk)``.

    .nox/official-sdk/bin/python benchmarks/client_official.py --base-url ws://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from _report import Tally, print_ready, serve_asyncio

# The official SDK, from its own virtual environment: not this project's package of that name.
from telcoflow import (
    BufferClosedError,
    Call,
    CallAudioConfig,
    SessionManager,
    SessionManagerConfig,
    SessionNotification,
    WSSError,
)

KIND = "official"


async def agent(call: Call, tally: Tally) -> None:
    tally.calls += 1
    try:
        result = await call.answer()
        if not result:
            tally.error(f"{call.id}: answer failed: {result.error_code}")
            return
        tally.answered += 1
        async for chunk in call.audio_stream():
            tally.chunks_in += 1
            await call.send_audio(chunk)
            tally.bytes_out += len(chunk)
    except BufferClosedError:
        pass
    except WSSError as exc:
        tally.error(f"{call.id}: {exc!r}")
    finally:
        tally.ended += 1


async def control(args: argparse.Namespace, tally: Tally, tasks: set[asyncio.Task[None]]) -> None:
    config = SessionManagerConfig.create(
        api_key=args.api_key,
        connector_uuid=args.connector_uuid,
        base_url=args.base_url,
        call_audio=CallAudioConfig(sample_rate=args.sample_rate),
    )
    async with SessionManager(config) as sm:

        @sm.on_session_notification
        async def notified(note: SessionNotification) -> None:
            try:
                session = await sm.open_session(note.session_id)
            except WSSError as exc:
                tally.error(f"{note.session_id}: open_session failed: {exc!r}")
                return

            @session.on_incoming_call
            async def on_call(call: Call) -> None:
                await agent(call, tally)

            await session.ready()

        print_ready(KIND)
        await asyncio.Event().wait()  # until SIGTERM cancels us


def main(argv: list[str] | None = None) -> int:
    return serve_asyncio(KIND, control, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
