"""``telcoflow_sdk.exceptions``: see :mod:`telcoflow.exceptions`."""

from telcoflow.exceptions import *  # noqa: F403
from telcoflow.exceptions import __all__  # noqa: F401
