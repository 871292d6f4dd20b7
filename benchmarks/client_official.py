"""Benchmark client: the official asyncio SDK (``telcoflow`` 1.0.0 from the package registry)
echoing every call, until SIGTERM.

Run it with the Python of the virtual environment that ``nox -s bench`` makes for that SDK (its
import name, ``telcoflow``, is the same as ours). Only its media plane speaks PROTOCOL.md: its
control plane (``session.notify``, ``open_session`` over REST, ``call.in``) is the hosted
service's, which the sandbox does not emulate. So this script reads the control frames itself
(with ``websockets``, which the SDK depends on) and hands each offer to the SDK through its
documented cross-node hand-off, ``Call.from_json``; from there on the SDK does everything, as in
its README's echo example: ``answer()``, ``async for chunk in call.audio_stream():
await call.send_audio(chunk)``.

    .nox/official-sdk/bin/python benchmarks/client_official.py --base-url ws://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from _report import Tally, print_ready, serve_asyncio
from websockets.asyncio.client import connect  # the official SDK's dependency

# The official SDK, from its own virtual environment: not this project's package of that name.
from telcoflow import BufferClosedError, Call, CallAudioConfig, WSSError

KIND = "official"


def handoff(offer: dict[str, object]) -> str:
    """Our ``call.incoming`` as the JSON that the official ``Call.to_json()`` produces."""
    return json.dumps(
        {
            "channel": "TELCO",
            "id": offer["callId"],
            "caller": offer["from"],
            "callee": offer["to"],
            "session_url": offer["mediaUrl"],
            "session_token": offer["mediaToken"],
        }
    )


async def agent(offer: dict[str, object], audio: CallAudioConfig, tally: Tally) -> None:
    call = Call.from_json(handoff(offer), audio_config=audio)
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
        await call.close()
    except BufferClosedError:
        pass
    except WSSError as exc:
        tally.error(f"{call.id}: {exc!r}")
    finally:
        tally.ended += 1
        await call._force_close()  # no public way to drop the media connection


async def control(args: argparse.Namespace, tally: Tally, tasks: set[asyncio.Task[None]]) -> None:
    audio = CallAudioConfig(sample_rate=args.sample_rate)
    headers = {
        "x-api-key": args.api_key,
        "x-connector-uuid": args.connector_uuid,
        "x-sdk-version": KIND,
    }
    async with connect(args.base_url + "/v1/agent/control", additional_headers=headers) as ws:
        setup = {"type": "setup", "data": {"sampleRate": args.sample_rate, "audioMode": "mixed"}}
        await ws.send(json.dumps(setup))
        async for message in ws:
            msg = json.loads(message)
            if msg.get("type") == "setup.done":
                print_ready(KIND)
            elif msg.get("type") == "call.incoming":
                task = asyncio.create_task(agent(msg["data"], audio, tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


def main(argv: list[str] | None = None) -> int:
    return serve_asyncio(KIND, control, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
