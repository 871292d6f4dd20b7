"""The conversation as text, turn by turn, as the caller experienced it; no I/O.

Models send text in fragments, the caller's a little after they spoke and the agent's often
ahead of its audio. :class:`TranscriptBuilder` assembles them into :class:`Turn` s in the order
the turns began. An agent turn that was interrupted is marked and cut to the part the caller
heard (the heard fraction of its generated duration, at a word boundary), so the transcript
never claims the caller heard what was never played.

Invariants: one user turn per caller utterance, one agent turn per answer (``item_id``); a
turn's text only grows until it is final; a cut happens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TranscriptBuilder", "Turn", "cut_text"]


@dataclass
class Turn:
    """One side's turn: who, what (as heard), when (seconds since the bridge started)."""

    role: Literal["user", "agent"]
    text: str = ""
    started_at: float = 0.0
    ended_at: float | None = None
    item_id: str | None = None
    interrupted: bool = False
    #: The part of the answer the caller heard (1.0 unless interrupted).
    heard_fraction: float = 1.0
    final: bool = False


def cut_text(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``, ending at a word boundary."""
    if fraction >= 1.0:
        return text
    if fraction <= 0.0:
        return ""
    n = int(len(text) * fraction)
    head = text[:n]
    if n < len(text) and not text[n].isspace() and " " in head:
        head = head[: head.rindex(" ")]
    return head.rstrip()


class TranscriptBuilder:
    """Fragments in, turns out (see the module's invariants)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self._user: Turn | None = None
        self._agent: dict[str, Turn] = {}

    def speech_started(self, now: float) -> None:
        """The caller began an utterance: its turn takes its place in the order now."""
        if self._user is None or self._user.text:
            self._user = Turn("user", started_at=now)
            self.turns.append(self._user)

    def user_text(self, text: str, final: bool, now: float) -> Turn | None:
        """A fragment of the caller's words; returns the turn once it is final."""
        turn = self._user
        if turn is None or turn.final:
            turn = self._user = Turn("user", started_at=now)
            self.turns.append(turn)
        turn.text = text if final and text else turn.text + text
        if final:
            turn.final, turn.ended_at = True, now
            self._user = None
            return turn
        return None

    def agent_started(self, item_id: str, now: float) -> Turn:
        turn = self._agent.get(item_id)
        if turn is None:
            if self._user is not None and self._user.text:  # the agent answers: their turn is over
                self._user.final, self._user.ended_at = True, now
                self._user = None
            turn = self._agent[item_id] = Turn("agent", started_at=now, item_id=item_id)
            self.turns.append(turn)
        return turn

    def agent_text(self, item_id: str, text: str, final: bool, now: float) -> None:
        turn = self.agent_started(item_id, now)
        if turn.interrupted:
            return  # text after the cut was never heard
        turn.text = text if final else turn.text + text

    def agent_done(self, item_id: str, now: float) -> Turn | None:
        """The answer was generated in full; returns its turn (once)."""
        turn = self._agent.get(item_id)
        if turn is None or turn.final:
            return None
        turn.final, turn.ended_at = True, now
        return turn

    def agent_interrupted(self, item_id: str, fraction: float, now: float) -> Turn | None:
        turn = self._agent.get(item_id)
        if turn is None or turn.interrupted:
            return None
        turn.interrupted = True
        turn.heard_fraction = max(0.0, min(1.0, fraction))
        turn.text = cut_text(turn.text, turn.heard_fraction)
        turn.final, turn.ended_at = True, now
        return turn

    def result(self) -> list[Turn]:
        """Every agent turn, and the user turns that have text (an utterance the model never
        transcribed has none)."""
        return [t for t in self.turns if t.role == "agent" or t.text]
