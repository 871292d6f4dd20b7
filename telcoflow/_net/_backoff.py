"""Jittered exponential backoff for reconnecting the control plane.

Pure computation: the caller sleeps. The random source is injectable so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """Delays of ``initial * factor**n`` capped at ``maximum``, each stretched by up to ``jitter``.

    PROTOCOL.md: 0.5 s start, factor 1.5, 10 s cap, jitter up to 20 %. Jitter spreads the
    reconnects of many clients after a server restart so they do not arrive in one burst.
    """

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 10.0
    jitter: float = 0.2
    max_attempts: int | None = None
    random: Callable[[], float] = attrs.field(default=random.random, repr=False)
    attempts: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs initial > 0, factor >= 1 and maximum >= initial")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within 0..1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("backoff max_attempts must be >= 0 or None")

    @property
    def exhausted(self) -> bool:
        """True once ``max_attempts`` delays have been handed out."""
        return self.max_attempts is not None and self.attempts >= self.max_attempts

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return base * (1 + self.jitter * self.random())

    def reset(self) -> None:
        """A connection succeeded: start again from ``initial``."""
        self.attempts = 0
