"""The sandbox's HTTP API (SANDBOX.md), served with h11 on the same port as the WebSockets."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import h11

from ._spec import CallSpec

if TYPE_CHECKING:
    from ._server import Sandbox

__all__ = ["HttpApi", "Response"]

logger = logging.getLogger("telcoflow.sandbox")

#: Request bodies carry at most a WAV for a caller's voice; 32 MiB is minutes of 24 kHz audio.
MAX_BODY_BYTES = 32 * 1024 * 1024

Response = tuple[int, str, bytes]

_CALL = re.compile(r"^/sandbox/calls/([^/]+)$")
_CALLEE_HANGUP = re.compile(r"^/sandbox/calls/([^/]+)/callee/hangup$")
_RECORDING = re.compile(r"^/sandbox/calls/([^/]+)/recording/([a-z]+)\.wav$")


def json_response(status: int, body: Any) -> Response:
    return status, "application/json", json.dumps(body).encode()


def error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class HttpApi:
    """Routes one request to the sandbox and returns ``(status, content type, body)``."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def handle(self, method: str, path: str, body: bytes) -> Response:
        try:
            return await self._route(method, path.split("?", 1)[0], body)
        except Exception:
            logger.exception("sandbox API: %s %s failed", method, path)
            return error(500, "internal error in the sandbox; see its log")

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        sb = self.sandbox
        if path == "/sandbox/health":
            if method != "GET":
                return error(405, "use GET")
            return json_response(200, sb.health())
        if path == "/sandbox/calls":
            if method == "GET":
                return json_response(200, {"calls": [c.to_json() for c in sb.calls]})
            if method == "POST":
                try:
                    spec = CallSpec.from_json(_json(body))
                    call = await sb.create_call(spec)
                except ValueError as exc:
                    return error(400, str(exc))
                return json_response(201, {"call_id": call.call_id, "state": call.state.value})
            return error(405, "use GET or POST")
        if path == "/sandbox/faults":
            if method != "POST":
                return error(405, "use POST")
            try:
                result = await sb.inject_fault(_json(body))
            except ValueError as exc:
                return error(400, str(exc))
            return json_response(200, result)
        if m := _CALL.match(path):
            found = sb.get_call(m[1])
            if found is None:
                return error(404, f"no call {m[1]!r}")
            if method == "GET":
                return json_response(200, found.to_json())
            if method == "DELETE":
                await found.hangup_caller()
                return json_response(200, found.to_json())
            return error(405, "use GET or DELETE")
        if m := _CALLEE_HANGUP.match(path):
            found = sb.get_call(m[1])
            if found is None:
                return error(404, f"no call {m[1]!r}")
            if method != "POST":
                return error(405, "use POST")
            try:
                await found.hangup_callee()
            except ValueError as exc:
                return error(409, str(exc))
            return json_response(200, found.to_json())
        if m := _RECORDING.match(path):
            found = sb.get_call(m[1])
            if found is None:
                return error(404, f"no call {m[1]!r}")
            if method != "GET":
                return error(405, "use GET")
            try:
                return 200, "audio/wav", found.recording_wav(m[2])
            except ValueError as exc:
                return error(404, str(exc))
        return error(404, f"no such endpoint: {path}")


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError("body is not valid JSON") from None


async def read_body(conn: h11.Connection, stream: anyio.abc.ByteStream) -> bytes | None:
    """The request's body, or None when it is too large or the peer went away."""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive(65536))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            return None


async def send_response(
    conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response
) -> None:
    status, content_type, payload = response
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(payload))),
        ("server", "telcoflow-sandbox"),
    ]
    parts = [
        conn.send(h11.Response(status_code=status, headers=headers)),
        conn.send(h11.Data(data=payload)),
        conn.send(h11.EndOfMessage()),
    ]
    await stream.send(b"".join(p for p in parts if p))
