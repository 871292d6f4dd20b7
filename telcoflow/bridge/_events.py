"""The model events a bridge understands, whatever the model: one vocabulary for every adapter.

Adapters translate their model's wire events into these (Gemini's ``interrupted`` and OpenAI's
``speech_started`` both become :class:`SpeechStarted`); the bridge never sees a provider's
message. All are frozen and slotted: they are made once per model message and only read.

``item_id`` names one spoken answer (OpenAI's conversation item, a turn counter for Gemini):
the bridge keys its playout ledger, its late-delta guard and its transcript on it. An adapter
that has no ids gives every answer a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "AgentTranscript",
    "AudioDelta",
    "GenerationDone",
    "ModelError",
    "ModelEvent",
    "SessionEnding",
    "SessionResumed",
    "SpeechStarted",
    "SpeechStopped",
    "ToolCall",
    "ToolCalls",
    "ToolCallsCancelled",
    "TurnDone",
    "Usage",
    "UserTranscript",
]


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """A piece of the model's spoken answer: PCM16 mono at ``rate`` (the model's rate, which
    the bridge resamples to the call's)."""

    pcm: bytes
    rate: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking (the model's VAD, or its report of an interruption): an
    answer that is playing is now stale."""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped talking: the model is about to answer (per-turn latency starts)."""


@dataclass(frozen=True, slots=True)
class GenerationDone:
    """The model has generated all of answer ``item_id`` (it may not have played yet)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The model's turn is over (OpenAI ``response.done``, Gemini ``turnComplete``)."""


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """Text of what the caller said; ``final`` closes the caller's turn."""

    text: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class AgentTranscript:
    """Text of what the model is saying in answer ``item_id`` (it may run ahead of the audio);
    ``final`` means ``text`` is the whole answer, replacing the fragments before it."""

    text: str
    item_id: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function the model wants called."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Functions to call; their results go back in one :meth:`ModelAdapter.send_tool_results`."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallsCancelled:
    """The model no longer wants these calls (Gemini ``toolCallCancellation``)."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionEnding:
    """The model's server will close the session in ``time_left_s`` (Gemini ``goAway``); an
    adapter that can resume does so itself and then reports :class:`SessionResumed`."""

    time_left_s: float | None


@dataclass(frozen=True, slots=True)
class SessionResumed:
    """The adapter reconnected and the conversation goes on (``resumed``: with its context)."""

    resumed: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the model reported for a turn (``raw``: the provider's own record)."""

    input_tokens: int = 0
    output_tokens: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelError:
    """The model reported an error; a ``fatal`` one ends the conversation, others are logged
    and counted and the call goes on."""

    message: str
    code: str | None = None
    fatal: bool = False


ModelEvent: TypeAlias = (
    AudioDelta
    | SpeechStarted
    | SpeechStopped
    | GenerationDone
    | TurnDone
    | UserTranscript
    | AgentTranscript
    | ToolCalls
    | ToolCallsCancelled
    | SessionEnding
    | SessionResumed
    | Usage
    | ModelError
)
