"""Project tasks: ``nox -s tests`` (the default), ``lint``, ``typecheck``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

#: What ``nox -s bench`` compares: ours on each backend (uvloop's loop as a row of its own), the
#: official SDK, and the floor.
BENCH_KINDS = ("ours-asyncio", "ours-trio", "ours-uvloop", "official", "baseline")


#: The pure core's branch coverage by tests/core is 99 % (2026-12-01); it must not fall below.
CORE_BRANCH_COVERAGE = 98


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite; every async test runs under asyncio and trio, warnings are errors."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff==0.17.6")  # pinned: formatting must not change under CI
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the package (checked as Python 3.10, hence the backport's stubs); and a
    floor on the pure core's branch coverage by its own tests (tests/core), which prove the
    protocol without I/O: a change that leaves part of it unproven fails here."""
    session.install("-e", ".[test]", "mypy==2.4.1", "exceptiongroup", "coverage>=7")
    session.run("mypy")
    session.run(
        "coverage", "run", "--branch", "--source=telcoflow/_core", "-m", "pytest", "-q",
        "tests/core",
    )  # fmt: skip
    session.run("coverage", "report", f"--fail-under={CORE_BRANCH_COVERAGE}")


@nox.session
def soak(session: nox.Session) -> None:
    """Many echo calls for minutes; fails if memory, descriptors or tasks grow (not a default).

    ``nox -s soak -- --minutes 10 --concurrency 50 --backend trio --json``
    """
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Echo benchmark: ours on asyncio and trio, the official SDK and a bare floor (not a default).

    ``nox -s bench`` runs every workload and writes the table to ``benchmarks/README.md``;
    arguments replace that: ``nox -s bench -- --n 10,50 --seconds 10 --kinds ours-trio,official``.
    The official SDK (``telcoflow`` 1.0.0 from the registry) has our import name, so it gets a
    virtual environment of its own beside this session's.
    """
    import pathlib

    session.install("-e", ".[test]", "uvloop")  # uvloop: the ours-uvloop row
    official = pathlib.Path(session.virtualenv.location).parent / "official-sdk"
    python = official / "bin" / "python"
    if not python.exists():
        session.run("python", "-m", "venv", str(official))
    session.run(str(python), "-m", "pip", "install", "-q", "telcoflow==1.0.0", external=True)
    args = session.posargs or ["--readme", "--kinds", ",".join(BENCH_KINDS)]
    session.run("python", "benchmarks/bench.py", "--official-python", str(python), *args)


@nox.session
def interop(session: nox.Session) -> None:
    """The OFFICIAL client (``telcoflow`` 1.0.0 from the registry), unchanged, against our sandbox.

    The scenarios of ``interop/official`` run in a virtual environment of the official client's
    own beside this session's (it has our import name), with that environment's pytest; each
    starts a sandbox with this session's interpreter (``TELCOFLOW_SANDBOX_PYTHON``), where the
    project is installed. ``nox -s interop -- -k echo`` passes arguments to that pytest.
    """
    import pathlib

    session.install("-e", ".")
    official = pathlib.Path(session.virtualenv.location).parent / "official-sdk"
    python = official / "bin" / "python"
    if not python.exists():
        session.run("python", "-m", "venv", str(official))
    session.run(
        str(python),
        "-m",
        "pip",
        "install",
        "-q",
        "telcoflow==1.0.0",
        "pytest",
        "pytest-timeout",
        external=True,
    )
    sandbox_python = pathlib.Path(session.virtualenv.location) / "bin" / "python"
    session.run(
        str(official / "bin" / "pytest"),
        "interop/official",
        *session.posargs,
        env={"TELCOFLOW_SANDBOX_PYTHON": str(sandbox_python)},
        external=True,
    )
