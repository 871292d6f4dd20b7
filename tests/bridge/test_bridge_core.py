"""The bridge's arithmetic without I/O: playout ledger, transcript assembly, tool schemas."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telcoflow.bridge import end_call, tool
from telcoflow.bridge._playout import PlayoutLedger
from telcoflow.bridge._tools import json_schema
from telcoflow.bridge._transcript import TranscriptBuilder, cut_text
from telcoflow.call import ActiveCall
from telcoflow.testing._engine import ScriptedConversation, tone16

# --- playout ledger --------------------------------------------------------------------------


def test_heard_is_what_played_past_the_start() -> None:
    ledger = PlayoutLedger(8000)
    ledger.generated("a", 48000, 24000)  # 1 s generated at 24 kHz
    assert ledger.handed("a", 16000, ahead=4000) == 4000  # 1 s at 8 kHz, after 0.25 s
    assert ledger.handed("a", 0, ahead=9999) is None  # the start is fixed once
    assert ledger.heard_ms("a", 4000) == 0
    assert ledger.heard_ms("a", 4000 + 8000) == 500
    assert ledger.heard_ms("a", 10**9) == 1000  # never more than handed or generated


def test_heard_is_clamped_to_the_generated_duration() -> None:
    # The resampler's filter makes the call-rate audio a little longer than the model's.
    ledger = PlayoutLedger(24000)
    ledger.generated("a", 24000, 24000)  # 500 ms generated
    ledger.handed("a", 26400, ahead=0)  # 550 ms handed
    assert ledger.heard_ms("a", 26400) == 500


@given(
    rate=st.sampled_from([8000, 16000, 24000]),
    model_rate=st.sampled_from([16000, 24000]),
    generated=st.integers(0, 10**6).map(lambda n: n * 2),
    handed=st.integers(0, 10**6).map(lambda n: n * 2),
    ahead=st.integers(0, 10**7),
    played=st.integers(0, 2 * 10**7),
)
def test_heard_is_never_negative_nor_past_what_was_generated(
    rate: int, model_rate: int, generated: int, handed: int, ahead: int, played: int
) -> None:
    ledger = PlayoutLedger(rate)
    ledger.generated("a", generated, model_rate)
    ledger.handed("a", handed, ahead)
    heard = ledger.heard_ms("a", played)
    assert 0 <= heard <= generated * 1000 / (2 * model_rate)
    assert heard <= handed * 1000 / (2 * rate)
    assert ledger.heard_ms("unknown", played) == 0


# --- transcript ------------------------------------------------------------------------------


def test_cut_text_ends_at_a_word() -> None:
    assert cut_text("hello there my friend", 0.6) == "hello there"
    assert cut_text("hello", 0.0) == ""
    assert cut_text("hello", 1.0) == "hello"


def test_turns_in_order_and_an_interrupted_answer_cut() -> None:
    t = TranscriptBuilder()
    t.speech_started(0.0)
    t.agent_started("a1", 1.0)
    t.agent_text("a1", "one two three four", False, 1.0)
    assert t.user_text("hi there", True, 1.2) is not None  # transcribed after the answer began
    turn = t.agent_interrupted("a1", 0.5, 2.0)
    assert turn is not None
    assert turn.text == "one two"
    assert turn.interrupted
    t.agent_text("a1", " five", False, 2.1)  # text after the cut was never heard
    assert [(x.role, x.text) for x in t.result()] == [("user", "hi there"), ("agent", "one two")]


# --- tools -----------------------------------------------------------------------------------


def test_schema_from_type_hints() -> None:
    def book(
        call: ActiveCall,
        name: Annotated[str, "who books"],
        size: int,
        when: Literal["lunch", "dinner"] = "dinner",
        notes: list[str] | None = None,
    ) -> None:
        """Book a table.

        More detail that the model does not need.
        """

    schema, call_param = json_schema(book)
    assert call_param == "call"
    assert schema == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "who books"},
            "size": {"type": "integer"},
            "when": {"enum": ["lunch", "dinner"], "type": "string"},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "size"],
    }
    t = tool(book)
    assert t.description == "Book a table."
    assert t.spec.parameters == schema


def test_a_tool_without_hints_is_refused_with_its_name() -> None:
    def bad(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match=r"tool bad: parameter 'x' needs a type hint"):
        tool(bad)
    with pytest.raises(ValueError, match="timeout must be positive"):
        tool(timeout=0)(lambda: None)


def test_builtin_tools_describe_the_farewell() -> None:
    assert end_call.builtin == "end_call"
    assert "goodbye" in end_call.description.lower()


# --- the scripted engine ---------------------------------------------------------------------


def test_engine_hears_an_odd_byte_without_failing() -> None:
    """A client may send any bytes; the stand-ins must not fall over on half a sample."""
    conv = ScriptedConversation(out_rate=24000)
    speech = tone16(440, 0.02, 16000)
    assert conv.hear(speech + b"\x01", 16000) == ["speech_started"]
    assert conv.hear(b"\x01", 16000) == []
    assert len(conv.heard[16000]) == len(speech) + 2  # kept as sent


def test_engine_turns_and_interruptions() -> None:
    conv = ScriptedConversation(out_rate=24000)
    speech, quiet = tone16(440, 0.02, 16000), bytes(640)
    assert conv.hear(speech, 16000) == ["speech_started"]
    assert conv.hear(speech, 16000) == []
    edges = [e for _ in range(15) for e in conv.hear(quiet, 16000)]
    assert edges == ["speech_stopped"]
    assert conv.turns == 1
    r = conv.start_response()
    assert r.id == "item_1"
    assert r.answer.hz == 660
    assert conv.playing(0.0)
    assert r.next_chunk(10.0) is not None
    assert conv.interrupt(10.01) is r
    assert r.interrupted
    assert conv.interrupt(10.02) is None  # once


@pytest.mark.anyio
async def test_plain_function_tools_run_in_a_thread_and_bad_arguments_are_named() -> None:
    from telcoflow.bridge._tools import run_tool

    @tool(timeout=5)
    def blocking() -> str:
        """A plain function: runs in a worker thread."""
        return "done"

    class FakeCall:
        call_id = "c1"

    with anyio.fail_after(5):
        out = await run_tool(blocking, "blocking", {}, FakeCall())  # type: ignore[arg-type]
    assert out == {"result": "done"}
    out = await run_tool(blocking, "blocking", {"x": 1}, FakeCall())  # type: ignore[arg-type]
    assert "bad arguments" in out["error"]
