"""Logging for a running agent: plain text or one JSON object per line, every record with the
call id (and session id) of the call it is about, when there is one."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .._context import CallContextFilter

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "call_id", "session_id", "pid", "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "call_id": getattr(record, "call_id", None),
            "session_id": getattr(record, "session_id", None),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        call = getattr(record, "call_id", None)
        record.call_tag = f" [{call}]" if call else ""
        return super().format(record)


def configure_logging(level: int, fmt: str = "text") -> None:
    """Root logging for the process: ``text`` or ``json`` to stderr, with call ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)s %(name)s%(call_tag)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
