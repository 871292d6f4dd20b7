"""What the model stand-ins share about serving: closing a listener however they stop."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc

__all__ = ["close_listener"]


async def close_listener(listener: anyio.abc.Listener[Any]) -> None:
    """Close ``listener`` even while the stand-in is being cancelled."""
    with anyio.CancelScope(shield=True):
        await listener.aclose()
