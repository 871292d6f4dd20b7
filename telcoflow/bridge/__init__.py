"""Bridges from a phone call to a realtime voice model: ``await bridge(call, model)``.

The bridge owns what only the phone side knows (what the caller has *heard*, when playout
ends, the call's rate) and does, once and tested, what every hand-written bridge gets wrong:
resampling each way with the tail of each answer heard, barge-in in one step with nothing of
the interrupted answer leaking into the next, truncation at the heard position, a greeting
while the call is answered, tools in their own tasks, hanging up only after the farewell,
transcripts and latency figures, and the model session closed when the caller hangs up.

Models plug in through :class:`ModelAdapter`: :class:`ScriptedModel` runs anywhere (asyncio
and trio, no network); :mod:`telcoflow.bridge.openai` and :mod:`telcoflow.bridge.gemini` sit
on the models' official client libraries (extras ``openai`` and ``gemini``; asyncio only).
"""

from ._adapter import ModelAdapter, SessionConfig, ToolResult, ToolSpec, require_asyncio
from ._events import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SessionEnding,
    SessionResumed,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCalls,
    ToolCallsCancelled,
    TurnDone,
    Usage,
    UserTranscript,
)
from ._run import (
    BridgeResult,
    BridgeStats,
    Interruption,
    ModelConnectError,
    ToolRun,
    TurnLatency,
    bridge,
)
from ._tools import Tool, end_call, tool, transfer
from ._transcript import Turn
from .scripted import ScriptedModel

__all__ = [
    "AgentTranscript",
    "AudioDelta",
    "BridgeResult",
    "BridgeStats",
    "GenerationDone",
    "Interruption",
    "ModelAdapter",
    "ModelConnectError",
    "ModelError",
    "ModelEvent",
    "ScriptedModel",
    "SessionConfig",
    "SessionEnding",
    "SessionResumed",
    "SpeechStarted",
    "SpeechStopped",
    "Tool",
    "ToolCall",
    "ToolCalls",
    "ToolCallsCancelled",
    "ToolResult",
    "ToolRun",
    "ToolSpec",
    "Turn",
    "TurnDone",
    "TurnLatency",
    "Usage",
    "UserTranscript",
    "bridge",
    "end_call",
    "require_asyncio",
    "tool",
    "transfer",
]
