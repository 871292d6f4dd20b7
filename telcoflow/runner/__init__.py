"""Run an agent in production: ``telcoflow run module:handler`` and its programmatic form.

- :func:`serve_agent`: one process taking calls for a handler until SIGTERM/Ctrl-C, which
  drain (no new claims; calls in hand finish within a timeout), with health and Prometheus
  metrics over HTTP and an event-loop watchdog;
- :func:`supervise`: ``--workers N`` processes on one connector, restarted when they die,
  drained together, their metrics summed;
- :func:`load_handler`: ``"module:attribute"`` to the handler, as uvicorn finds an app.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from ._logging import JsonFormatter, configure_logging
from ._metrics import AgentMetrics
from ._supervisor import supervise, worker_command
from ._watchdog import Watchdog
from ._worker import AgentOptions, serve_agent

__all__ = [
    "AgentMetrics",
    "AgentOptions",
    "JsonFormatter",
    "Watchdog",
    "configure_logging",
    "load_handler",
    "serve_agent",
    "supervise",
    "worker_command",
]


def load_handler(target: str) -> Callable[..., Any]:
    """The object ``target`` names, ``"package.module:attribute"`` (the current directory is
    importable, as for ``python -m``). ``ValueError`` says what is wrong."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected module:handler (e.g. agent:answer), not {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable (a handler takes the call)")
    return obj  # type: ignore[no-any-return]
