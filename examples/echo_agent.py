"""An echo agent: answers every call and sends back what it hears.

Run a sandbox in one terminal and the agent in another:

    telcoflow sandbox serve
    TELCOFLOW_BASE_URL=ws://127.0.0.1:8765 python examples/echo_agent.py

then place a call: ``curl -X POST http://127.0.0.1:8765/sandbox/calls``.
Runs on asyncio by default; ``python examples/echo_agent.py trio`` runs it on trio.
"""

from __future__ import annotations

import logging
import os
import sys

import anyio

from telcoflow.sandbox import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID
from telcoflow_sdk import ActiveCall, TelcoflowClient, TelcoflowClientConfig, events


async def on_call(call: ActiveCall) -> None:
    call.on(events.CALL_TERMINATED, lambda reason: print(f"{call.call_id}: ended ({reason})"))
    await call.answer()
    print(f"{call.call_id}: answered call from {call.caller_number}")
    async for chunk in call.audio_stream():
        await call.send_audio(chunk)


async def main() -> None:
    config = TelcoflowClientConfig.sandbox(
        api_key=os.environ.get("TELCOFLOW_API_KEY", DEFAULT_API_KEY),
        connector_uuid=os.environ.get("TELCOFLOW_CONNECTOR_UUID", DEFAULT_CONNECTOR_UUID),
    )
    async with TelcoflowClient(config) as client:
        client.on(events.INCOMING_CALL, on_call)
        print(f"echo agent connected to {config.base_url}; waiting for calls (Ctrl-C stops)")
        await client.run_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
    except KeyboardInterrupt:
        pass
