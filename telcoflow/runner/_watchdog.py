"""An event-loop watchdog: code that blocks the loop (CPU work or a blocking call in a handler)
delays every call's audio, so it is named, once per call, with the fix.

A task in the loop stamps the time every ``interval``; a thread checks the stamp. When the loop
has not run for ``threshold`` seconds the thread looks at the loop thread's stack (it is still
blocked there), finds the call whose code it is (an :class:`~telcoflow.ActiveCall` in the frames)
and the innermost application frame, and logs a WARNING: which call, how long so far, where,
and that ``anyio.to_thread.run_sync`` moves such work off the loop. Each call is reported once;
stalls outside any call once per place. The thread only reads; it never touches the loop.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import FrameType

import anyio

from ..call import ActiveCall

__all__ = ["Watchdog"]

logger = logging.getLogger("telcoflow_sdk.runner")

#: Frames from these directories are the SDK's or a library's, not the application's.
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__ or ""))
    for m in (anyio, logging, threading)
    if getattr(m, "__file__", None)
)
_SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_application(frame: FrameType) -> bool:
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_SDK_DIR) or "site-packages" in path or path.startswith(_LIBRARY_DIRS):
        return False
    return not path.startswith(sys.prefix) or "site-packages" in path


class Watchdog:
    """``await watchdog.run()`` in the loop to be watched, until cancelled."""

    def __init__(self, threshold: float = 0.2, interval: float = 0.05) -> None:
        self.threshold = threshold
        self.interval = interval
        self._stamp = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()
        self._reported: set[str] = set()
        #: Stalls reported so far (for tests and metrics).
        self.reports = 0

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        thread = threading.Thread(target=self._watch, name="telcoflow watchdog", daemon=True)
        thread.start()
        try:
            while True:
                self._stamp = time.monotonic()
                await anyio.sleep(self.interval)
        finally:
            self._stop.set()
            thread.join(timeout=1.0)

    def _watch(self) -> None:
        reported_stall = False
        while not self._stop.wait(self.interval):
            gap = time.monotonic() - self._stamp
            if gap < self.threshold:
                reported_stall = False
                continue
            if reported_stall:
                continue
            reported_stall = True
            frame = sys._current_frames().get(self._loop_thread)
            if frame is not None:
                self._report(frame, gap)

    def _report(self, frame: FrameType, gap: float) -> None:
        call_id: str | None = None
        where: FrameType | None = None
        f: FrameType | None = frame
        while f is not None:
            if where is None and _is_application(f):
                where = f
            owner = f.f_locals.get("self", f.f_locals.get("call"))
            if isinstance(owner, ActiveCall):
                call_id = owner.call_id
                break
            f = f.f_back
        place = (
            f"{where.f_code.co_filename}:{where.f_lineno} in {where.f_code.co_name}"
            if where is not None
            else f"{frame.f_code.co_filename}:{frame.f_lineno}"
        )
        key = call_id or place
        if key in self._reported:
            return
        self._reported.add(key)
        self.reports += 1
        who = f"call {call_id}: its handler" if call_id else "code outside any call"
        logger.warning(
            "%s blocked the event loop for %.0f ms (at %s): every call's audio stalls meanwhile; "
            "run blocking or CPU-heavy work with `await anyio.to_thread.run_sync(...)`",
            who,
            gap * 1000,
            place,
        )
