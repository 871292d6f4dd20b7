"""Smoke tests of ``examples/``: each example's demo runs as a user would run it, in a subprocess,
against its embedded sandbox, and must exit 0 having told the story it is meant to tell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each demo finishes in a few seconds; this only catches a hang.
TIMEOUT_S = 60


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("TELCOFLOW_BASE_URL", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


EXPECTED = {
    ("echo_agent.py",): [
        "call.answer ok -> ANSWERED",
        "ok   the caller heard its own voice echoed back",
        "ok   the caller ended the call",
    ],
    ("echo_agent.py", "--backend", "trio"): [
        "ok   the caller heard its own voice echoed back",
    ],
    ("voicemail.py",): [
        "Tue 10:00 is in business hours; ringing the office",
        "Tue 22:00 is after hours; taking a message",
        "ok   the caller and the office talked after the agent left",
        "ok   the message holds what the caller said after the beep, and only that",
    ],
    ("escalation.py",): [
        "call.connect CALL_REJECTED",
        "call.connect CALL_UNANSWERED",
        "ok   answered: caller and human talked on after the bot left",
        "ok   declined: the caller heard the apology, and the bot hung up",
        "ok   unanswered: the caller heard the apology, and the bot hung up",
        "ok   quiet: the bot said goodbye without ringing anyone",
    ],
    ("monitoring.py",): [
        "agent.spy ok -> CONNECTED, agent in spy mode",
        "agent.whisper ok -> CONNECTED, agent in whisper mode",
        "ok   whisper: only the operator heard the coaching",
        "ok   barge: the caller and the operator both heard the announcement",
        "ok   close: the caller and the operator talked on after the supervisor left",
    ],
    ("trio_agent.py",): [
        "ok   one nursery served both calls at once",
        "time is up",
        "ok   talker: heard goodbye once the 1.5 s were up",
    ],
    ("gemini_receptionist.py",): [
        "find_booking('Ada') -> a table for 2 on Friday at 19:00",
        "ok   the receptionist sent call.answer, call.disconnect",
        "ok   Gemini heard the caller at 16 kHz",
        "ok   the goodbye was heard in full before the hang-up",
    ],
    ("openai_escalation.py",): [
        "ok   the agent sent call.answer, agent.interrupt, call.connect, call.close",
        "ok   OpenAI's record of it was cut at what the caller heard",
        "ok   'putting you through' was heard in full before the ringing",
        "ok   the caller and the human talked after the agent left",
    ],
    ("realtime_bridge.py", "--backend", "trio"): [
        "ok   the 1st answer stopped when the caller talked over it",
        "ok   the 2nd answer played in full",
    ],
    ("realtime_bridge.py",): [
        "the caller talked over item_1 after",
        "agent.interrupt ok",
        "ok   the 1st answer stopped when the caller talked over it",
        "ok   the 2nd answer played in full",
    ],
}


@pytest.mark.parametrize("example", list(EXPECTED), ids=" ".join)
def test_demo_goes_as_intended(example: tuple[str, ...]) -> None:
    script, *options = example
    result = run(f"examples/{script}", "--demo", *options)
    out = result.stdout
    assert result.returncode == 0, f"{script} exited {result.returncode}\n{out}\n{result.stderr}"
    assert "Result: OK" in out
    assert "FAIL" not in out
    for line in EXPECTED[example]:
        assert line in out, f"{line!r} missing from the output of {script}:\n{out}"


def test_a_demo_fails_when_the_agent_misbehaves() -> None:
    """The checks are real: an "echo" agent that hangs up at once fails the echo demo."""
    code = """
import sys
sys.path.insert(0, "examples")
import _harness, echo_agent

async def rude(call):
    await call.answer()
    await call.disconnect()

echo_agent.agent = rude
sys.exit(_harness.run_demo(echo_agent.demo))
"""
    result = run("-c", code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL the caller heard its own voice echoed back" in result.stdout
    assert "Result: FAILED" in result.stdout
