"""Which call the running code works for, as a context variable: set in each call's tasks (the
application's handler, the call's reader and dispatcher inherit it), read by log records
(:class:`CallContextFilter`) and the watchdog."""

from __future__ import annotations

import contextvars
import logging

__all__ = ["CALL_ID", "SESSION_ID", "CallContextFilter"]

CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telcoflow_call_id", default=None
)
SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telcoflow_session_id", default=None
)


class CallContextFilter(logging.Filter):
    """Adds ``call_id`` and ``session_id`` to every record (None outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = CALL_ID.get()
        if not hasattr(record, "session_id"):
            record.session_id = SESSION_ID.get()
        return True
