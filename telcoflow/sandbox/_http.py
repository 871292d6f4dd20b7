"""The sandbox's own HTTP API (SANDBOX.md), served with h11 on the same port as the WebSockets.

A route table: (method, path pattern) → handler. A path that matches with another method gets
405 naming the methods it has; one that matches nothing gets 404. Handlers raise ``ValueError``
for a bad request (400 with its text) and :class:`NotFound` for a missing call (404).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import anyio
import anyio.to_thread

from ._call import SimCall
from ._spec import CallSpec, NumberSpec

__all__ = [
    "HttpApi",
    "NotFound",
    "Response",
    "SandboxApi",
    "Streamed",
    "error",
    "json_response",
]

logger = logging.getLogger("telcoflow.sandbox")


class Streamed:
    """A body sent in chunks as the client reads it (a recording), not built whole."""

    def __init__(self, length: int, chunks: Callable[[int], Iterator[bytes]]) -> None:
        self.length = length
        self.chunks = chunks


Response = tuple[int, str, "bytes | Streamed"]


class NotFound(Exception):
    """What the request names does not exist (404)."""


class SandboxApi(Protocol):
    """What the HTTP API needs of the sandbox."""

    def health(self) -> dict[str, Any]: ...

    @property
    def calls(self) -> list[SimCall]: ...

    def get_call(self, call_id: str) -> SimCall | None: ...

    async def create_call(self, spec: CallSpec | None = None, **fields: Any) -> SimCall: ...

    async def inject_fault(self, body: Any) -> dict[str, Any]: ...

    def set_number(self, number: str, spec: NumberSpec) -> None: ...


def json_response(status: int, body: Any) -> Response:
    return status, "application/json", json.dumps(body).encode()


def error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError as exc:  # invalid JSON, or an integer of more digits than Python reads
        raise ValueError(f"body is not valid JSON: {exc}") from None


def _call_spec(body: bytes) -> CallSpec:
    return CallSpec.from_json(_json(body))


#: Request bodies larger than this are parsed in a worker thread, not on the event loop.
PARSE_IN_THREAD_BYTES = 64 * 1024

Handler = Callable[[re.Match[str], bytes], Awaitable[Response]]


class HttpApi:
    """Routes one ``/sandbox/...`` request and returns ``(status, content type, body)``."""

    def __init__(self, sandbox: SandboxApi) -> None:
        self._sb = sandbox
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/sandbox/health"), self._health),
            ("GET", re.compile(r"/sandbox/calls"), self._list),
            ("POST", re.compile(r"/sandbox/calls"), self._create),
            ("GET", re.compile(r"/sandbox/calls/([^/]+)"), self._get),
            ("DELETE", re.compile(r"/sandbox/calls/([^/]+)"), self._hangup),
            ("POST", re.compile(r"/sandbox/calls/([^/]+)/callee/hangup"), self._hangup_callee),
            ("GET", re.compile(r"/sandbox/calls/([^/]+)/recording/([a-z]+)\.wav"), self._recording),
            ("POST", re.compile(r"/sandbox/faults"), self._fault),
            ("PUT", re.compile(r"/sandbox/numbers/([^/]+)"), self._number),
        ]

    async def handle(self, method: str, path: str, body: bytes) -> Response:
        path = path.split("?", 1)[0]
        allowed: list[str] = []
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            try:
                return await handler(match, body)
            except ValueError as exc:
                return error(400, str(exc))
            except NotFound as exc:
                return error(404, str(exc))
            except Exception:
                logger.exception("sandbox API: %s %s failed", method, path)
                return error(500, "internal error in the sandbox; see its log")
        if allowed:
            return error(405, f"use {' or '.join(allowed)}")
        return error(404, f"no such endpoint: {path}")

    def _call(self, call_id: str) -> SimCall:
        call = self._sb.get_call(call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r}")
        return call

    async def _health(self, _m: re.Match[str], _body: bytes) -> Response:
        return json_response(200, self._sb.health())

    async def _list(self, _m: re.Match[str], _body: bytes) -> Response:
        return json_response(200, {"calls": [c.to_json() for c in self._sb.calls]})

    async def _create(self, _m: re.Match[str], body: bytes) -> Response:
        if len(body) > PARSE_IN_THREAD_BYTES:
            # A WAV voice in base64: JSON, base64 and the WAV header of megabytes take tens of
            # milliseconds, which every call's 20 ms media tick would feel.
            spec = await anyio.to_thread.run_sync(_call_spec, body)
        else:
            spec = _call_spec(body)
        call = await self._sb.create_call(spec)
        return json_response(201, {"call_id": call.call_id, "state": call.state.value})

    async def _get(self, m: re.Match[str], _body: bytes) -> Response:
        return json_response(200, self._call(m[1]).to_json())

    async def _hangup(self, m: re.Match[str], _body: bytes) -> Response:
        call = self._call(m[1])
        await call.hangup_caller()
        return json_response(200, call.to_json())

    async def _hangup_callee(self, m: re.Match[str], _body: bytes) -> Response:
        call = self._call(m[1])
        try:
            await call.hangup_callee()
        except ValueError as exc:
            return error(409, str(exc))
        return json_response(200, call.to_json())

    async def _recording(self, m: re.Match[str], _body: bytes) -> Response:
        call = self._call(m[1])
        if call.recordings_discarded:
            return error(410, f"the recordings of call {call.call_id} were discarded (retention)")
        try:
            length, chunks = call.recording_wav_stream(m[2])
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        return 200, "audio/wav", Streamed(length, chunks)

    async def _fault(self, _m: re.Match[str], body: bytes) -> Response:
        return json_response(200, await self._sb.inject_fault(_json(body)))

    async def _number(self, m: re.Match[str], body: bytes) -> Response:
        number = m[1]
        spec = NumberSpec.from_json(_json(body))
        self._sb.set_number(number, spec)
        return json_response(200, {"number": number})
