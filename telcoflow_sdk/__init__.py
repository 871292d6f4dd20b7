"""Compatibility name: applications written for the official ``telcoflow_sdk`` run unchanged."""

from telcoflow import *  # noqa: F403
from telcoflow import __all__, __version__  # noqa: F401

from . import events, exceptions  # noqa: F401
