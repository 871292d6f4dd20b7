"""The package version, sent to the server as ``x-sdk-version``."""

__version__ = "0.1.0"
