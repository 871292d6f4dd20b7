"""A local Telcoflow server with simulated callers and callees, for offline development and tests.

``async with Sandbox() as sb:`` (asyncio or trio) serves the hosted service's control
(session-manager), media and REST planes (PROTOCOL.md) and the HTTP API of SANDBOX.md on one
port; ``telcoflow sandbox serve`` runs it from the command line.
"""

from ._call import CallStats, SimCall
from ._frontdoor import Limits, Upgrade
from ._pcm import mix, read_wav, resample, rms, tone_level, tone_pcm, write_wav
from ._server import DEFAULT_API_KEY, DEFAULT_CONNECTOR_UUID, Connector, Sandbox
from ._spec import CalleeSpec, CallSpec, NumberSpec, Voice
from ._switchboard import Retention, SimSession, SmConnection

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_CONNECTOR_UUID",
    "CallSpec",
    "CallStats",
    "CalleeSpec",
    "Connector",
    "Limits",
    "NumberSpec",
    "Retention",
    "Sandbox",
    "SimCall",
    "SimSession",
    "SmConnection",
    "Upgrade",
    "Voice",
    "mix",
    "read_wav",
    "resample",
    "rms",
    "tone_level",
    "tone_pcm",
    "write_wav",
]
