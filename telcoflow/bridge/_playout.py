"""Where each answer sits in what the caller has heard: the arithmetic of truncation, no I/O.

The call counts the bytes it has played (``ActiveCall.played_bytes``). When the first byte of
an answer is handed to the call, everything ahead of it in line (played, queued locally,
pending at the server) fixes its *start* in that count; what the caller heard of it is then
``played_bytes - start``, clamped to what was handed over. A model's record of an answer is
in the model's own timeline, so the heard time is clamped once more to the duration the model
generated: a truncation point past it is the "already shorter" error every hand-written bridge
hits, and it cannot happen here.

Invariants: ``heard_ms`` is never negative, never more than the generated duration, and
rounds down (the error is towards "heard less", the safe side); an item's start is fixed once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlayoutLedger"]


@dataclass
class _Item:
    start: int | None = None  # in the call's played-byte count
    handed: int = 0  # call-rate bytes given to the call
    generated_ms: float = 0.0  # duration the model generated, at its own rate


class PlayoutLedger:
    """Per answer: its start in the played stream, what was handed over and generated."""

    def __init__(self, call_rate: int) -> None:
        self.call_rate = call_rate
        self._items: dict[str, _Item] = {}

    def generated(self, item_id: str, model_bytes: int, model_rate: int) -> None:
        """The model sent ``model_bytes`` more of ``item_id`` at ``model_rate``."""
        item = self._items.setdefault(item_id, _Item())
        item.generated_ms += model_bytes * 1000 / (2 * model_rate)

    def handed(self, item_id: str, nbytes: int, ahead: int) -> int | None:
        """``nbytes`` of ``item_id`` were given to the call with ``ahead`` bytes (played +
        queued + pending) before them; returns the item's start when this is its first byte."""
        item = self._items.setdefault(item_id, _Item())
        first = item.start is None
        if first:
            item.start = ahead
        item.handed += nbytes
        return item.start if first else None

    def start(self, item_id: str) -> int | None:
        item = self._items.get(item_id)
        return None if item is None else item.start

    def heard_ms(self, item_id: str, played_bytes: int) -> int:
        """Milliseconds of ``item_id`` the caller has heard, given the call's played bytes."""
        item = self._items.get(item_id)
        if item is None or item.start is None:
            return 0
        heard = min(max(played_bytes - item.start, 0), item.handed)
        ms = heard * 1000 // (2 * self.call_rate)
        return int(min(ms, item.generated_ms))

    def generated_ms(self, item_id: str) -> float:
        item = self._items.get(item_id)
        return 0.0 if item is None else item.generated_ms

    def forget(self, item_id: str) -> None:
        self._items.pop(item_id, None)
