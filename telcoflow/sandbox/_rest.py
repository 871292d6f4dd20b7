"""The hosted service's REST plane, as the sandbox serves it (PROTOCOL.md, "REST plane").

``/public/v1/...`` on the sandbox's port, with the control plane's credentials (the front door
authenticates the request and hands the connector here). Errors are JSON ``{"code",
"message"}`` with the protocol's codes, as the official client reads them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._core import ErrorCode
from ._http import Response, json_response
from ._switchboard import Switchboard

__all__ = ["RestApi", "rest_error"]

_SESSIONS = "/public/v1/sessions"
_CLOSE = re.compile(r"/public/v1/sessions/([^/]+)/close")


def rest_error(status: int, code: str, message: str) -> Response:
    """An error body as the hosted service sends it."""
    return status, "application/json", json.dumps({"code": code, "message": message}).encode()


class RestApi:
    """``GET /public/v1/sessions`` and ``POST /public/v1/sessions/{id}/close``."""

    def __init__(self, switchboard: Switchboard) -> None:
        self._switchboard = switchboard

    async def handle(self, method: str, target: str, connector_uuid: str) -> Response:
        parts = urlsplit(target)
        path = parts.path
        if path == _SESSIONS:
            if method != "GET":
                return rest_error(405, ErrorCode.INVALID_REQUEST, "use GET")
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            state = query.get("state")
            if state is not None and state not in ("OPEN", "CLOSED"):
                return rest_error(400, ErrorCode.INVALID_REQUEST, "state must be OPEN or CLOSED")
            items = self._switchboard.list_sessions(
                connector_uuid,
                channel=query.get("channel"),
                remote_address=query.get("remoteAddress"),
                state=state,
            )
            return json_response(200, {"items": items})
        if m := _CLOSE.fullmatch(path):
            if method != "POST":
                return rest_error(405, ErrorCode.INVALID_REQUEST, "use POST")
            result: dict[str, Any] | str = await self._switchboard.close_session(
                connector_uuid, m[1]
            )
            if result == ErrorCode.SESSION_NOT_FOUND:
                return rest_error(404, ErrorCode.SESSION_NOT_FOUND, f"no session {m[1]!r}")
            if result == ErrorCode.SESSION_CLOSED:
                return rest_error(409, ErrorCode.SESSION_CLOSED, f"session {m[1]} is closed")
            return json_response(200, result)
        return rest_error(404, "NOT_FOUND", f"no such endpoint: {path}")
