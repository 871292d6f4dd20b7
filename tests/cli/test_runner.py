"""The runner's parts in-process: the event-loop watchdog, JSON logs with call ids, the health
server and its probes. The processes themselves (``telcoflow run``) are in test_run.py."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from telcoflow import ActiveCall, TelcoflowClient, TelcoflowClientConfig, events
from telcoflow.runner import AgentMetrics, JsonFormatter, Watchdog
from telcoflow.runner._http import HealthServer
from telcoflow.sandbox import CallSpec, Sandbox

from ..helpers import WAIT

pytestmark = pytest.mark.anyio

MakeConfig = Callable[..., TelcoflowClientConfig]

#: Long enough past the watchdog's 200 ms that a loaded machine still sees the stall.
BLOCK_S = 0.5


async def test_a_handler_blocking_the_loop_is_named_once_per_call_with_the_fix(
    sandbox: Sandbox, make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="telcoflow_sdk.runner")
    watchdog = Watchdog()
    done: list[str] = []
    finished = anyio.Event()
    client = TelcoflowClient(make_config())

    @client.on(events.INCOMING_CALL)
    async def agent(call: ActiveCall) -> None:
        await call.answer()
        for _ in range(2):  # blocks twice: reported once
            time.sleep(BLOCK_S)  # the trap: blocking work on the loop  # noqa: ASYNC251
            await anyio.lowlevel.checkpoint()
        done.append(call.call_id)
        if len(done) == 2:
            finished.set()

    async with client, anyio.create_task_group() as tg:
        tg.start_soon(watchdog.run)
        first = await sandbox.create_call()
        second = await sandbox.create_call()
        with anyio.fail_after(WAIT + 4 * BLOCK_S):
            await finished.wait()
        tg.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert watchdog.reports == 2, warnings
    for sim in (first, second):
        (mine,) = [w for w in warnings if f"call {sim.call_id}: its handler blocked" in w]
        assert "anyio.to_thread.run_sync" in mine
        assert "test_runner.py" in mine, "names where it blocks"
        assert "in agent" in mine


async def test_the_watchdog_is_silent_for_a_healthy_loop() -> None:
    watchdog = Watchdog()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog.run)
        for _ in range(20):  # half a second of an agent that awaits (time passes; no stall)
            await anyio.sleep(0.025)
        tg.cancel_scope.cancel()
    assert watchdog.reports == 0


async def test_json_logs_carry_the_call_id_of_the_call_they_are_about(
    sandbox: Sandbox, make_config: MakeConfig
) -> None:
    from telcoflow._context import CallContextFilter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter())
    app = logging.getLogger("test_agent")
    app.addHandler(handler)
    app.setLevel(logging.INFO)
    said = anyio.Event()
    client = TelcoflowClient(make_config())

    @client.on(events.INCOMING_CALL)
    async def agent(call: ActiveCall) -> None:
        app.info("greeting %s", call.caller_number)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            app.exception("a bug")
        said.set()

    try:
        app.info("before any call")
        async with client:
            sim = await sandbox.create_call(CallSpec(from_number="+15550123"))
            with anyio.fail_after(WAIT):
                await said.wait()
    finally:
        app.removeHandler(handler)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["before any call", "greeting +15550123", "a bug"]
    assert records[0]["call_id"] is None
    assert records[1]["call_id"] == sim.call_id
    assert records[1]["session_id"] == sim.session_id
    assert records[1]["level"] == "INFO"
    assert records[1]["logger"] == "test_agent"
    assert "ZeroDivisionError" in records[2]["exc"]


async def test_the_health_server_answers_probes_and_metrics(
    sandbox: Sandbox, make_config: MakeConfig
) -> None:
    metrics = AgentMetrics()
    ready = [True]
    server = HealthServer(lambda: (ready[0], "detail"), metrics.exposition)
    async with TelcoflowClient(make_config()) as client, anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        sim = await sandbox.create_call(CallSpec(caller_hangup_after_s=0.2))
        call = await client.incoming_calls().__anext__()
        await call.answer()
        with anyio.fail_after(WAIT):
            await call.wait_terminated()
        metrics.sync(client)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            ready[0] = False
            assert (await http.get("/readyz")).status_code == 503
            assert (await http.get("/nowhere")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
            text = (await http.get("/metrics")).text
        tg.cancel_scope.cancel()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("telcoflow_calls_taken_total", ())] == 1
    assert samples[("telcoflow_calls_ended_total", (("reason", "caller_hangup"),))] == 1
    assert samples[("telcoflow_active_calls", ())] == 0
    assert sim.ended_reason == "caller_hangup"
