"""Typed errors. Every error a user can cause is an :class:`EnginekitError` with an exit code.

Exit codes (shared by every subcommand):
  0 all checks passed, 1 a check failed, 2 user error, 3 missing dependency or hardware, 4 internal error.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_INTERNAL_ERROR = 4


class EnginekitError(Exception):
    """Root of every error enginekit raises on purpose."""

    exit_code: int = EXIT_INTERNAL_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class UserError(EnginekitError):
    """Something the user gave us is wrong: a flag, a file, data. Exit code 2."""

    exit_code = EXIT_USER_ERROR


class InvalidArgumentError(UserError):
    """A malformed or inconsistent option value."""


class ModelLoadError(UserError):
    """The model file is missing, unreadable, corrupt or unsafe."""


class FeedError(UserError):
    """Input data does not match what the model expects (name, shape, dtype, values)."""


class OutputPathError(UserError):
    """An output path is a folder, not a regular file, an input, or in a place that cannot be written."""


class UnknownNameError(UserError):
    """An unknown backend, output, or other name; the message suggests the closest match."""


class MissingDependencyError(EnginekitError):
    """An optional package is not installed. Exit code 3."""

    exit_code = EXIT_MISSING_DEPENDENCY

    def __init__(self, package: str, *, extra: str | None = None, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        hint = f"pip install 'enginekit[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"Python package '{package}' is not installed{what}.", hint=hint)
        self.package = package
        self.extra = extra


class HardwareUnavailableError(EnginekitError):
    """The hardware or runtime needed for this is not present here. Exit code 3."""

    exit_code = EXIT_MISSING_DEPENDENCY


class BackendError(EnginekitError):
    """A backend failed to load or run a model (its own error message is kept). Exit code 4 when fatal."""


class VerificationError(EnginekitError):
    """A produced artifact does not match its source (outputs or output shapes differ). Exit code 1."""

    exit_code = EXIT_CHECK_FAILED


class BuildError(EnginekitError):
    """An engine could not be built from a model (parser or builder errors). Exit code 1."""

    exit_code = EXIT_CHECK_FAILED


class InternalError(EnginekitError):
    """A bug in enginekit. Exit code 4."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """'; did you mean X?' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""
