"""The exceptions restoredrill raises.

Every error carries what was being done, what was seen and what the user can do about it, so a
failure in a nightly drill can be acted on from the report alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RestoreDrillError(Exception):
    """Base class: a message plus an optional remedy, rendered together."""

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(self.render())

    def render(self) -> str:
        if self.remedy:
            return f"{self.message}\n  fix: {self.remedy}"
        return self.message


class ConfigError(RestoreDrillError):
    """A setting, a drill config file or a command-line value is wrong."""


@dataclass(frozen=True)
class SourceLocation:
    """A place in a file: what a user opens to fix a problem."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class ManifestError(RestoreDrillError):
    """A file in the GitOps repo cannot be read as the manifest it claims to be."""

    def __init__(self, message: str, *, location: SourceLocation, remedy: str | None = None) -> None:
        self.location = location
        super().__init__(f"{location}: {message}", remedy=remedy)


class MissingToolError(RestoreDrillError):
    """A program restoredrill needs is not installed."""

    def __init__(self, tool: str, *, remedy: str) -> None:
        self.tool = tool
        super().__init__(f"required program {tool!r} was not found on PATH", remedy=remedy)


class CommandError(RestoreDrillError):
    """An external command failed; carries the command line, exit code and output."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        returncode: int | None,
        output: str,
        remedy: str | None = None,
    ) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.output = output
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = "\n".join(output.strip().splitlines()[-30:])
        super().__init__(f"command {' '.join(self.command)!r} {status}\n{tail}", remedy=remedy)


class WaitTimeout(RestoreDrillError):
    """A named wait ran out of time; says what it waited for, how long, and what it saw last."""

    def __init__(self, what: str, *, seconds: float, last_seen: str, remedy: str | None = None) -> None:
        self.what = what
        self.seconds = seconds
        self.last_seen = last_seen
        super().__init__(
            f"timed out after {seconds:.0f}s waiting for {what}; last seen: {last_seen}", remedy=remedy
        )


class NotOursError(RestoreDrillError):
    """A destructive action was refused because restoredrill did not create the target."""
