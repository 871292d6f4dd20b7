"""What a model adapter implements, and what the bridge hands it.

The bridge owns the phone-side truths an adapter cannot know (what was *played*, when playout
ends, the call's rate); the adapter owns its model's protocol. An adapter:

- takes caller audio as PCM16 mono at :attr:`ModelAdapter.input_rate` (the bridge resamples);
- yields :mod:`~telcoflow.bridge._events` for the whole session from :meth:`events` (not per
  turn: re-entering a per-turn receive, and resuming a lost session, are the adapter's job);
- is told of an interruption with how much of the answer the caller heard, so a model that
  keeps a transcript of its own audio (OpenAI) can cut it there.

Adapters on asyncio-only client libraries call :func:`require_asyncio` first thing in
:meth:`open`, so that under trio they fail at once with a message instead of deep inside the
library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import sniffio

from ._events import ModelEvent

__all__ = [
    "ModelAdapter",
    "SessionConfig",
    "ToolResult",
    "ToolSpec",
    "require_asyncio",
]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: ``parameters`` is a JSON schema (an ``object``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The answer to one :class:`~telcoflow.bridge.ToolCall`: ``output`` is JSON-serialisable
    (an error is ``{"error": "..."}``, never an exception)."""

    id: str
    name: str
    output: Any


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What every model needs to know to start a conversation; anything provider-specific goes
    to the adapter's own constructor in the provider's own types."""

    instructions: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    voice: str | None = None
    #: Ask the model for text of both sides (the bridge's transcript).
    transcription: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """One conversation with one model; made per call, used by one bridge, closed by it."""

    #: The PCM16 rate the model wants caller audio at.
    input_rate: int
    #: Whether :meth:`interrupted` can cut the model's record of an answer to what was heard.
    can_truncate: bool

    async def open(self, config: SessionConfig) -> None:
        """Connect and set the session up; return once the model is ready for audio."""

    async def send_audio(self, pcm: bytes) -> None:
        """Caller audio, PCM16 mono at :attr:`input_rate`."""

    def events(self) -> AsyncIterator[ModelEvent]:
        """Every event of the session, in order; ends when the session is over."""

    async def respond(self, instructions: str | None = None) -> None:
        """Make the model speak now (the greeting), optionally told what to say."""

    async def interrupted(self, item_id: str | None, heard_ms: int) -> None:
        """The caller talked over answer ``item_id`` after hearing ``heard_ms`` of it."""

    async def send_tool_results(self, results: Sequence[ToolResult]) -> None:
        """Results of one :class:`~telcoflow.bridge.ToolCalls`, all at once."""

    async def aclose(self) -> None:
        """End the session; idempotent, and bounded in time by the bridge."""


def require_asyncio(adapter: str, library: str) -> None:
    """Raise at once, naming the library, when not running under asyncio."""
    try:
        backend = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        backend = "no event loop"
    if backend != "asyncio":
        raise RuntimeError(
            f"{adapter} needs asyncio: {library} runs only on asyncio, and this is {backend}. "
            "Run the agent on asyncio (telcoflow run --backend asyncio), or bridge with an "
            "adapter that runs on anyio such as telcoflow.bridge.ScriptedModel."
        )
