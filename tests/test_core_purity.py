"""The protocol core is pure: it imports with every I/O library blocked (STYLE.md: three rings)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import telcoflow

PACKAGE_DIR = Path(telcoflow.__file__).parent

#: I/O and concurrency libraries the core must never import, directly or through a dependency.
#: (Neither json, enum, math, itertools nor attrs pulls socket in; so socket is blocked too.)
BLOCKED = ("anyio", "wsproto", "trio", "h11", "ssl", "socket", "asyncio", "selectors", "select")

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys
    import types

    BLOCKED = set(sys.argv[2].split(","))
    preloaded = sorted(BLOCKED & set(sys.modules))
    assert not preloaded, f"already imported at startup: {preloaded}"


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the core must stay pure")
            return None


    sys.meta_path.insert(0, Blocker())
    try:
        import anyio  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("the blocker does not work")

    # Stand in for the package so that telcoflow/__init__.py (which imports the I/O rings) does
    # not run: only the core's own imports are under test.
    package = types.ModuleType("telcoflow")
    package.__path__ = [sys.argv[1]]
    sys.modules["telcoflow"] = package

    import telcoflow._core as core

    # Use it, to be sure nothing is imported lazily.
    client = core.MediaProtocol(core.Role.CLIENT)
    cid, text = client.command(core.Command.ANSWER, 10_000)
    server = core.MediaProtocol(core.Role.SERVER)
    server.receive(text)
    client.receive(server.grant(960))
    client.receive(server.respond(cid, True))
    control = core.ControlProtocol(core.Role.CLIENT)
    control.send(core.Setup())
    assert client.call_state is core.CallState.ANSWERED

    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
    assert not loaded, loaded
    outside = sorted(
        name for name in sys.modules
        if name.startswith("telcoflow.") and not name.startswith("telcoflow._core")
    )
    assert not outside, f"the core imported other rings: {outside}"
    print("pure")
    """
)


def test_core_imports_with_io_libraries_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(PACKAGE_DIR), ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"
