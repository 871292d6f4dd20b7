"""The pytest plugin, as a user's test suite sees it (a separate pytest run, entry point loaded)."""

from __future__ import annotations

import pytest

USER_TESTS = """
import anyio
import pytest

from telcoflow import events
from telcoflow.audio import tone, write_wav
from telcoflow.sandbox import CalleeSpec, Voice
from telcoflow.testing import (
    assert_commands, assert_heard_tone, assert_heard_wav, assert_silent, heard
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def greeter(call):
    await call.answer()
    await call.send_audio(tone(660, 0.5, call.sample_rate))
    await call.connect(ring_time_seconds=5)
    await call.close()


async def test_agent_greets_then_hands_over(telcoflow_client, telcoflow_inbox, place_call):
    telcoflow_client.on(events.INCOMING_CALL, greeter)
    sim = await place_call(callee=CalleeSpec(answer_after_s=0.6, voice=Voice.tone(880)))
    with anyio.fail_after(10):
        await sim.wait_for(lambda c: c.agent_mode is None and c.state.value == "CONNECTED"
                           and len(c.commands) == 3)
        await sim.wait_for(lambda c: len(c.recordings["caller"]) >= 2 * 24000 * 2)
    assert_commands(sim, ["call.answer", "call.connect", "call.close"])
    assert_heard_tone(sim, 660, party="caller", at_least_s=0.3)
    assert_heard_tone(sim, 880, party="caller", at_least_s=0.2)
    assert_silent(heard(sim, "callee", 0, 0.3))


async def test_inbox_takes_calls_one_by_one(telcoflow_inbox, place_call):
    first = await place_call()
    second = await place_call()
    assert (await telcoflow_inbox.next()).call_id == first.call_id
    assert (await telcoflow_inbox.next()).call_id == second.call_id


async def test_assertions_fail_readably(place_call, telcoflow_inbox):
    sim = await place_call()
    call = await telcoflow_inbox.next()
    await call.answer()
    with anyio.fail_after(10):
        await sim.wait_for(lambda c: len(c.recordings["caller"]) >= 24000)
    with pytest.raises(AssertionError, match="heard 1000 Hz for 0.0 s"):
        assert_heard_tone(sim, 1000, party="agent")
    with pytest.raises(AssertionError, match="agent sent"):
        assert_commands(sim, ["call.connect"])


async def test_the_agent_heard_the_callers_wav(place_call, telcoflow_inbox):
    # A 16 kHz WAV on a 24 kHz call: assert_heard_wav converts it as the sandbox does.
    wav = write_wav(None, tone(500, 1.0, 16000) + tone(700, 1.0, 16000), 16000)
    sim = await place_call(caller=Voice.from_wav(wav, loop=False))
    call = await telcoflow_inbox.next()
    await call.answer()
    with anyio.fail_after(10):
        await sim.wait_for(lambda c: len(c.recordings["agent"]) >= 2 * 24000 * 2)
    assert_heard_wav(sim, wav, party="agent")
    with pytest.raises(AssertionError, match="did not hear the WAV"):
        assert_heard_wav(sim, write_wav(None, tone(900, 1.0, 16000), 16000), party="agent")
"""


def test_plugin_fixtures_and_assertions_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_agent=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-q")
    result.assert_outcomes(passed=8)


CRASHING_AGENT = """
import anyio
import pytest

from telcoflow import events

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def agent(call):
    await call.answer()
    1 / 0


async def test_a_crashing_agent(telcoflow_client, place_call):
    telcoflow_client.on(events.INCOMING_CALL, agent)
    sim = await place_call()
    with anyio.fail_after(10):
        await sim.wait_ended()  # the agent leaves the call it broke (call.close)
    assert sim.ended_reason == "agent_close"


async def test_a_healthy_agent_alongside(telcoflow_client, place_call):
    async def fine(call):
        await call.answer()
        await call.close()

    telcoflow_client.on(events.INCOMING_CALL, fine)
    sim = await place_call()
    with anyio.fail_after(10):
        await sim.wait_ended()
"""


def test_an_agent_that_raises_fails_its_test_with_the_traceback(
    pytester: pytest.Pytester,
) -> None:
    """The trap: the client survives a handler that raises, so a broken agent under test used
    to pass on both backends. Now the test that placed the call fails, showing the agent's
    traceback; the healthy agent's test still passes."""
    pytester.makepyfile(test_user_agent=CRASHING_AGENT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-q")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_crashing_agent[[]asyncio[]]*",
            "*the agent raised on call call-*",
            "*ZeroDivisionError: division by zero*",
            "*ERROR at teardown of test_a_crashing_agent[[]trio[]]*",
        ]
    )
    assert "1 / 0" in result.stdout.str(), "the agent's own line is in the traceback"


README_TEST = """
import anyio
import pytest
import sniffio

from telcoflow import events

pytestmark = pytest.mark.anyio  # the README's advice: no anyio_backend fixture of our own


async def agent(call):
    await call.answer()
    await call.close()


async def test_runs_on_each_backend(telcoflow_client, place_call):
    telcoflow_client.on(events.INCOMING_CALL, agent)
    sim = await place_call()
    with anyio.fail_after(10):
        await sim.wait_ended()
    print("backend:", sniffio.current_async_library())
"""


def test_the_readme_s_backend_advice_holds(pytester: pytest.Pytester) -> None:
    """README, "Testing your agent": with anyio 4's plugin a marked test runs on every
    installed backend, asyncio and trio (a dependency), with no fixture of the user's."""
    pytester.makepyfile(test_user_agent=README_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-v", "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines_random(["*backend: asyncio*", "*backend: trio*"])
