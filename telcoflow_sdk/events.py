"""``telcoflow_sdk.events``: see :mod:`telcoflow.events`."""

from telcoflow.events import *  # noqa: F403
from telcoflow.events import __all__  # noqa: F401
