"""Benchmark floor: an echo agent on bare asyncio streams and wsproto, with no SDK machinery.

It does the least PROTOCOL.md allows: the control connection's setup, a claim and a ready for
each notified session (no checks of the response), and per call a media connection that
answers, then echoes every inbound chunk of channel 0 as soon as the server's credit allows, in
``prefer_audio_frame_bytes`` frames. No reconnection, no state
machine, no validation, no queues, no tasks beyond one per connection. Prints the same ``ready``
and ``done`` lines as the other clients (``_report.py``).

    python benchmarks/client_baseline.py --base-url ws://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

from _report import Tally, print_ready, serve_asyncio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

KIND = "baseline"
ANSWER = json.dumps(
    {"type": "command", "data": {"command_id": "1", "command": "call.answer", "timeout_ms": 10000}}
)


class Socket:
    """One WebSocket client connection: wsproto over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, url: str, headers: list[tuple[str, str]]) -> Socket:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        sock = cls(reader, writer)
        request = Request(
            host=parts.netloc,
            target=parts.path or "/",
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        )
        writer.write(sock.ws.send(request))
        return sock

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def events(self):  # type: ignore[no-untyped-def]
        """Every wsproto event until the peer closes; whole messages only."""
        text: list[str] = []
        binary: list[bytes] = []
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        yield "".join(text)
                        text.clear()
                elif isinstance(event, BytesMessage):
                    binary.append(event.data)  # type: ignore[arg-type]
                    if event.message_finished:
                        yield b"".join(binary) if len(binary) > 1 else binary[0]
                        binary.clear()
                elif isinstance(event, Ping):
                    self.send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.send(self.ws.send(event.response()))
                    return
                elif isinstance(event, RejectConnection):
                    return
                elif isinstance(event, AcceptConnection):
                    yield event
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def media(url: str, token: str, tally: Tally) -> None:
    headers = [("authorization", f"Bearer {token}"), ("x-sdk-version", "1.0.0")]
    sock = await Socket.open(url, headers)
    ws, send = sock.ws, sock.send
    tally.calls += 1
    credit = 0
    frame = 960
    out = bytearray()
    try:
        async for message in sock.events():
            if isinstance(message, bytes):
                if message[0] == 0:
                    tally.chunks_in += 1
                    out += memoryview(message)[1:]
            elif isinstance(message, str):
                msg = json.loads(message)
                kind, data = msg.get("type"), msg.get("data") or {}
                if kind == "buffer_request" and data.get("channelId", 0) == 0:
                    credit += data["requested_bytes"]
                    frame = data.get("prefer_audio_frame_bytes") or frame
                elif kind == "call_event" and data.get("event") == "call.terminated":
                    tally.ended += 1
                elif kind == "command_response":
                    if data.get("success"):
                        tally.answered += 1
                    else:
                        tally.error(f"answer failed: {data.get('error_code')}")
            else:  # AcceptConnection
                send(ws.send(TextMessage(ANSWER)))
                continue
            n = min(len(out), credit) & ~1
            if n:
                frames = [
                    ws.send(BytesMessage(b"\x00" + out[i : min(i + frame, n)]))
                    for i in range(0, n, frame)
                ]
                send(b"".join(frames))
                del out[:n]
                credit -= n
                tally.bytes_out += n
    except (ConnectionError, OSError) as exc:
        tally.error(repr(exc))
    finally:
        sock.close()


async def control(args: argparse.Namespace, tally: Tally, tasks: set[asyncio.Task[None]]) -> None:
    headers = [
        ("x-api-key", args.api_key),
        ("x-connector-uuid", args.connector_uuid),
        ("x-sdk-version", "1.0.0"),
    ]
    sock = await Socket.open(args.base_url + "/v1/agent/session-manager", headers)
    setup = {"type": "setup", "data": {"sampleRate": args.sample_rate, "audioMode": "mixed"}}
    claims = 0
    async for message in sock.events():
        if isinstance(message, str):
            msg = json.loads(message)
            kind = msg.get("type")
            if kind == "setup.done":
                print_ready(KIND)
            elif kind == "session.notify":
                claims += 1
                sid = msg["sessionId"]
                claim = {"type": "session.open", "sessionId": sid, "reqId": str(claims)}
                ready = {"type": "session.ready", "sessionId": sid}
                sock.send(sock.ws.send(TextMessage(json.dumps(claim))))
                sock.send(sock.ws.send(TextMessage(json.dumps(ready))))
            elif kind == "call.in":
                task = asyncio.create_task(media(msg["url"], msg["token"], tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        elif not isinstance(message, bytes):  # accepted
            sock.send(sock.ws.send(TextMessage(json.dumps(setup))))


def main(argv: list[str] | None = None) -> int:
    return serve_asyncio(KIND, control, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
