"""The project's own error types.

User mistakes (bad config, missing file, wrong model) raise one of these; the CLI
turns them into one clear line per problem and a non-zero exit code. Programming
errors are left as ordinary exceptions and keep their traceback.
"""

from __future__ import annotations


class InspectorError(Exception):
    """A problem the user can fix. ``problems`` holds one line per problem."""

    exit_code = 1

    def __init__(self, *problems: str) -> None:
        self.problems = [p for p in problems if p] or ["unknown error"]
        super().__init__("; ".join(self.problems))


class ConfigError(InspectorError):
    """The station configuration is invalid (exit code 2)."""

    exit_code = 2


class ModelError(InspectorError):
    """The model file is missing, unreadable or does not fit the station (exit code 2)."""

    exit_code = 2


class SourceError(InspectorError):
    """A frame source cannot be opened or read."""


class BrokerError(InspectorError):
    """The MQTT broker refused us or cannot be reached."""
