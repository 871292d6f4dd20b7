"""Fixtures of the official client's scenario suite: a fresh sandbox subprocess per test.

The guard below makes sure ``telcoflow`` here is the official 1.0.0 client, not this project
(both have that import name): the suite proves nothing if it runs our client against our sandbox.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_kit import SandboxInfo, SandboxProcess, sandbox_python

import telcoflow

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _check_official_client() -> None:
    location = Path(telcoflow.__file__).resolve()
    version = importlib.metadata.version("telcoflow")
    ours = location.parent == PROJECT_ROOT / "telcoflow"
    if ours or version != "1.0.0" or not hasattr(telcoflow, "SessionManager"):
        raise RuntimeError(
            f"`telcoflow` here is {location} (version {version}), not the official 1.0.0 "
            "client: run this suite with the pytest of a virtual environment holding "
            "telcoflow==1.0.0 from the registry (nox -s interop does)"
        )


_check_official_client()


def _no_proxy_for_loopback() -> None:
    """The official client's websockets and httpx honour proxy variables: keep the sandbox,
    on loopback, out of any proxy a CI machine configures."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(name, "").split(",") if h]
        os.environ[name] = ",".join([*hosts, "127.0.0.1", "localhost"])


_no_proxy_for_loopback()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxInfo]:
    """A sandbox of its own for the test, in a subprocess of the project's interpreter."""
    process = SandboxProcess(tmp_path)
    info = process.start()
    try:
        yield info
    finally:
        process.stop()
        # Captured: pytest shows it with the report of a failed test.
        print(f"--- sandbox log ({info.log_path}) ---\n{process.log_tail(200)}")


def pytest_report_header() -> list[str]:
    return [
        f"official client: telcoflow {importlib.metadata.version('telcoflow')} "
        f"at {Path(telcoflow.__file__).parent}",
        f"sandbox interpreter (TELCOFLOW_SANDBOX_PYTHON): {sandbox_python()}",
    ]
