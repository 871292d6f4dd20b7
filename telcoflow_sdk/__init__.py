"""Compatibility name: applications written for the official ``telcoflow_sdk`` run unchanged.

Everything public in :mod:`telcoflow` is here under the same name, from one list
(``telcoflow.__all__``), so the two cannot drift apart.
"""

import telcoflow as _telcoflow
from telcoflow import *  # noqa: F403

# Our own ``events``/``exceptions`` submodules (re-exports of telcoflow's, importable as
# ``telcoflow_sdk.events``) replace the star import's modules of the same names.
from . import events, exceptions  # type: ignore[no-redef]

__all__ = [name for name in _telcoflow.__all__ if name not in ("events", "exceptions")]
__all__ += ["events", "exceptions"]
__version__ = _telcoflow.__version__
