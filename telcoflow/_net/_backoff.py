"""Jittered exponential backoff for reconnecting the control plane: the policy and its state.

Pure computation: the caller sleeps. :class:`ReconnectPolicy` is the user's configuration (frozen,
validated once, public as ``telcoflow.ReconnectPolicy``); :class:`Backoff` is one connection's
running count of attempts under a policy. The random source is injectable so tests are
deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Backoff", "ReconnectPolicy", "positive"]


def positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    """An attrs validator: a real number above zero (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attr.name} must be a positive number, not {value!r}")


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """How the control connection comes back after a loss (jittered exponential backoff).

    Delays of ``initial_delay * factor**n`` capped at ``max_delay``, each stretched by up to
    ``jitter``. PROTOCOL.md: 0.5 s start, factor 1.5, 10 s cap, jitter up to 20 %; jitter spreads
    the reconnects of many clients after a server restart so they do not arrive in one burst.
    ``max_attempts=None`` retries forever; 401, 403 and 426 are never retried.
    """

    initial_delay: float = attrs.field(default=0.5, validator=positive)
    factor: float = attrs.field(default=1.5, validator=positive)
    max_delay: float = attrs.field(default=10.0, validator=positive)
    jitter: float = attrs.field(default=0.2)
    max_attempts: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"reconnect factor must be >= 1, not {self.factor}")
        if self.max_delay < self.initial_delay:
            raise ValueError("reconnect max_delay must be >= initial_delay")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"reconnect jitter must be within 0..1, not {self.jitter}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or self.max_attempts < 0
        ):
            raise ValueError(
                f"reconnect max_attempts must be >= 0 or None, not {self.max_attempts}"
            )


@attrs.define
class Backoff:
    """The delays of one reconnecting connection under ``policy``."""

    policy: ReconnectPolicy = attrs.field(factory=ReconnectPolicy)
    random: Callable[[], float] = attrs.field(default=random.random, repr=False)
    attempts: int = attrs.field(default=0, init=False)

    @property
    def exhausted(self) -> bool:
        """True once ``max_attempts`` delays have been handed out."""
        limit = self.policy.max_attempts
        return limit is not None and self.attempts >= limit

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        p = self.policy
        base = min(p.max_delay, p.initial_delay * p.factor**self.attempts)
        self.attempts += 1
        return base * (1 + p.jitter * self.random())

    def reset(self) -> None:
        """A connection succeeded: start again from ``initial_delay``."""
        self.attempts = 0
