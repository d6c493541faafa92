"""The one error hierarchy: every failure scalemon expects is a `ScalemonError` with a one-line
message for the person at the keyboard. The CLI catches the base once (`scalemon: error: ...`,
exit code 2); the parts that must never stop (the probe, the monitor's readers) catch the kind
they expect and count it."""

from __future__ import annotations


class ScalemonError(Exception):
    """Bad input or an impossible request, said in one line."""


class RecordError(ScalemonError, ValueError):
    """Input that is not a valid record; the message is a short reason."""


class RunDirError(ScalemonError):
    """A run dir that is missing, unreadable or corrupt."""


class LaunchError(ScalemonError):
    """An impossible or inconsistent run configuration."""


class AttachError(ScalemonError):
    """Nothing to attach to, or not allowed to."""


class RelayError(ScalemonError):
    """A peer that breaks the relay protocol or fails authentication."""
