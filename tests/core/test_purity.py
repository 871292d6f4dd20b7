"""The protocol core is pure: it imports and runs with every I/O library blocked (STYLE.md:
three rings, imports point inward only; stdlib + attrs only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import telcoflow

PACKAGE_DIR = Path(telcoflow.__file__).parent

#: I/O and concurrency libraries the core must never import, directly or through a dependency.
#: (Neither json, enum, math, uuid nor attrs pulls socket in; so socket is blocked too.)
BLOCKED = ("anyio", "wsproto", "trio", "h11", "ssl", "socket", "asyncio", "selectors", "select")

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys
    import types

    BLOCKED = set(sys.argv[2].split(","))
    STARTUP = {name.partition(".")[0] for name in sys.modules}
    preloaded = sorted(BLOCKED & set(sys.modules))
    assert not preloaded, f"already imported at startup: {preloaded}"


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the core must stay pure")
            return None


    sys.meta_path.insert(0, Blocker())
    for name in sorted(BLOCKED):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise AssertionError(f"the blocker does not block {name}")

    # Stand in for the package so that telcoflow/__init__.py (which imports the I/O rings) does
    # not run: only the core's own imports are under test.
    package = types.ModuleType("telcoflow")
    package.__path__ = [sys.argv[1]]
    sys.modules["telcoflow"] = package

    import telcoflow._core as core

    # Use it, both planes and both roles, to be sure nothing is imported lazily.
    Role = core.Role

    # Control plane: setup, a push, a request and its response, a bad request, a lost link.
    client = core.ControlProtocol(Role.CLIENT)
    server = core.ControlProtocol(Role.SERVER)
    assert server.receive(client.send(core.Setup(16000))) == core.Setup(16000)
    assert client.receive(server.send(core.SetupDone("sm-1"))) == core.SetupDone("sm-1")
    notify = core.SessionNotify("sess-1", "TELCO", "+1", "+2", "NEW_INCOMING_CALL", 5)
    assert client.receive(server.send(notify)) == notify
    request = core.SessionOpen("sess-1", client.new_request_id())
    assert server.receive(client.send(request)) == request
    answer = core.Response(request.req_id, True, {"session": {"id": "sess-1"}})
    completed = client.receive(server.send(answer))
    assert completed == core.RequestCompleted(request, answer), completed
    try:
        server.receive('{"type": "session.open", "reqId": "r-bad"}')
    except core.BadRequest as bad:
        server.send(core.Response(bad.req_id, False, None, "INVALID_REQUEST"))
    else:
        raise AssertionError("no BadRequest")
    client.send(core.SessionCreate("TELCO", "+3", client.new_request_id()))
    assert len(client.connection_lost()) == 1

    # Media plane: a command and its response, credit, audio both ways, the end of the call.
    agent = core.MediaProtocol(Role.CLIENT, sample_rate=16000)
    media = core.MediaProtocol(Role.SERVER, sample_rate=16000)
    cid, text = agent.command(core.Command.ANSWER, 10_000)
    media.receive(text)
    agent.receive(media.grant(1280))
    agent.receive(media.respond(cid, True))
    assert agent.call_state is core.CallState.ANSWERED
    frames = agent.take_audio(bytearray(2000))
    assert [len(f) for f in frames] == [641, 641]
    for frame in frames:
        assert media.receive(frame).excess_bytes == 0
    assert agent.receive(core.encode_audio(1, b"\\x01\\x00")) == core.AudioFrame(1, b"\\x01\\x00")
    agent.receive(media.call_error("TTS_SESSION_ERROR", "x"))
    agent.receive(media.terminate("agent_close"))
    assert agent.terminated
    try:
        agent.receive("{")
    except core.RemoteProtocolError:
        pass
    after = core.call_state_after(core.CallState.CONNECTED, core.Command.CLOSE)
    assert after is core.CallState.CONNECTED

    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
    assert not loaded, loaded
    outside = sorted(
        name for name in sys.modules
        if name.startswith("telcoflow.") and not name.startswith("telcoflow._core")
    )
    assert not outside, f"the core imported other rings: {outside}"
    third_party = sorted({
        name.partition(".")[0] for name in sys.modules
        if name.partition(".")[0] not in sys.stdlib_module_names
        and name.partition(".")[0] not in STARTUP | {"telcoflow", "attr", "attrs"}
    })
    assert not third_party, f"the core imported more than stdlib + attrs: {third_party}"
    print("pure")
    """
)


def test_core_imports_and_runs_with_io_libraries_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, str(PACKAGE_DIR), ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


def _package_imports(path: Path) -> set[str]:
    """The ``telcoflow`` modules ``path`` imports (relative imports resolved), at any depth."""
    import ast

    module = "telcoflow." + ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("telcoflow"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("telcoflow")}
    return found


def test_the_connection_layer_imports_only_the_core() -> None:
    """The rings point inward: ``_net`` may use ``_core`` (and itself), never a facade, the
    sandbox or the runner, so that the client and the sandbox can share it."""
    offenders = {}
    for path in sorted((PACKAGE_DIR / "_net").glob("*.py")):
        outside = {
            m
            for m in _package_imports(path)
            if not m.startswith(("telcoflow._net", "telcoflow._core"))
        }
        if outside:
            offenders[path.name] = sorted(outside)
    assert offenders == {}
    # The check sees imports at all: _link uses the core.
    assert "telcoflow._core" in _package_imports(PACKAGE_DIR / "_net" / "_link.py")
