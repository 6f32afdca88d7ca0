"""Errors that reach the user as one clear message (exit code 2, no traceback)."""

from __future__ import annotations


class ScpoError(Exception):
    """Base class of every error the command line reports without a traceback."""


class SpecError(ScpoError):
    """A plant file (or another user input) is malformed.

    Parameters
    ----------
    source : str
        The file the problem is in (as the user named it).
    key_path : str
        Dotted key path inside the file, e.g. ``dynamics.ode.v``; empty for
        the whole file.
    message : str
        What is wrong and what was expected.
    line : int or None
        1-based line in the file, when known.
    """

    def __init__(self, source: str, key_path: str, message: str, line: int | None = None):
        self.source = source
        self.key_path = key_path
        self.message = message
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.key_path:
            where += f": {self.key_path}"
        return f"{where}: {self.message}"


class UsageError(ScpoError):
    """A command-line argument is wrong."""
