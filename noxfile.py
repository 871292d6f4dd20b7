"""Project tasks: ``nox -s tests`` (the default), ``lint``, ``typecheck``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


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
    """mypy, strict on the package (checked as Python 3.10, hence the backport's stubs)."""
    session.install("-e", ".[test]", "mypy==2.4.1", "exceptiongroup")
    session.run("mypy")
