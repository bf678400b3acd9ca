"""Error types shared across the toolkit."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input is invalid; raised before any compute, with a message saying what to do."""
