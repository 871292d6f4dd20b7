"""The event loops the command line runs on: asyncio, trio, or asyncio on uvloop's loop.

uvloop is offered as a backend of its own because it is a different loop, measured as its own
row in ``benchmarks/`` (about 30 % less CPU per call than asyncio's own loop at 100 calls);
anyio runs it as asyncio with ``use_uvloop``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["BACKENDS", "add_backend_option", "missing_backend", "run_async"]

BACKENDS = ("asyncio", "trio", "uvloop")

T = TypeVar("T")


def add_backend_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--backend`` on a subcommand too, so that ``telcoflow demo --backend trio`` works as
    ``telcoflow --backend trio demo`` does (the subcommand's wins when both are given)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=argparse.SUPPRESS,  # else it would hide the global option's value
        help=f"async backend to run {what} on (asyncio; uvloop: asyncio on uvloop's loop)",
    )


def missing_backend(backend: str) -> str | None:
    """What to install when ``backend``'s library is missing, else None."""
    module = {"trio": "trio", "uvloop": "uvloop"}.get(backend)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return "pip install trio" if module == "trio" else 'pip install "telcoflow-anyio[uvloop]"'
    return None


def run_async(fn: Callable[..., Awaitable[T]], *args: Any, backend: str) -> T:
    """``anyio.run`` on the named backend."""
    if backend == "uvloop":
        return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(fn, *args, backend=backend)
