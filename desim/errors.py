"""Error types. Every failure desim reports to a user is a :class:`DesimError` subclass.

The CLI turns these into one line on stderr and a documented exit code; anything else is a bug.
"""

import difflib
import warnings
from collections.abc import Iterable


class DesimError(Exception):
    """Base class of all errors desim reports to users."""

    exit_code = 1


class InputError(DesimError):
    """A file, field, option or value given by the user is invalid (exit code 2)."""

    exit_code = 2


class ScenarioError(InputError):
    """A scenario (TOML or ``--set`` override) failed validation."""


class TraceError(InputError):
    """A channel or compute trace file is malformed."""


class UnknownNameError(InputError):
    """A name (allocator, model, hardware class, format) is not registered."""


class AllocationError(DesimError):
    """An allocator returned an allocation that breaks the round's constraints (exit code 3)."""

    exit_code = 3


class InfeasibleError(DesimError):
    """No allocation can satisfy the round's constraints (exit code 3)."""

    exit_code = 3


class SimulationError(DesimError):
    """The simulation cannot continue, e.g. an upload whose rate stays zero forever (exit 3)."""

    exit_code = 3


class BackendError(DesimError):
    """A sweep's backend cannot proceed, e.g. an unreachable Ray cluster (exit code 3)."""

    exit_code = 3


class Interrupted(DesimError):
    """The user pressed Ctrl-C; the message says what was kept and how to resume (exit 130)."""

    exit_code = 130


class DesimWarning(UserWarning):
    """Suspicious but valid input (a key that is ignored, a likely typo): one ``warning:`` line.

    Raise it through :func:`warn`; the CLI prints each as one line on stderr naming the key.
    """


def warn(message: str) -> None:
    """Warn the user about suspicious but valid input (message names the key or file)."""
    warnings.warn(message, DesimWarning, stacklevel=2)


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt ``name``, or ``None``.

    Close means a :func:`difflib.get_close_matches` ratio of at least 0.7: ``rouds`` →
    ``rounds`` (0.91), ``dropout`` → ``dropout_rate`` (0.74), but not ``roofline`` →
    ``profiled`` (0.62).
    """
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.7)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name (:func:`closest`), else ``""``.

    Appended to an "unknown ..." message, after its list of known names, so the message still
    starts the same.
    """
    close = closest(name, known)
    return f"; did you mean {close!r}?" if close else ""
