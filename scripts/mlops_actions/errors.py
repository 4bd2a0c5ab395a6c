"""Domain errors and the exit codes they map to.

Every expected failure is one of these: a message that names the field or service, and a hint
that says how to fix it. `cli` turns them into one `::error` line and an exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

# Documented in the README ("Exit codes"). Distinct so a workflow can tell them apart.
EXIT_OK = 0
EXIT_REJECTED = 1  # the work ran and said no (a failing gate, later stages)
EXIT_USAGE = 2  # bad input, config or missing value: fix the workflow or mlops.yaml
EXIT_SERVICE = 3  # a service (tracking server, DVC remote, ...) failed or could not be reached
EXIT_CONFLICT = 4  # the registry changed under us (an alias moved, a promotion is running)
EXIT_TRAINING_FAILED = 5  # `run`: the training command failed (`train` keeps the command's status)
EXIT_FOLLOW_UP = 6  # promote/rollback: the alias moved, a follow-up failed; a re-run finishes it
EXIT_CANCELLED = 128  # + the signal, as a shell reports it: 130 SIGINT, 143 SIGTERM
EXIT_INTERNAL = 70  # a bug in mlops-actions (EX_SOFTWARE): a traceback is printed


class MlopsError(Exception):
    """An expected failure with a message for the user and a hint on how to fix it."""

    exit_code = EXIT_USAGE
    title = "mlops-actions"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(MlopsError):
    """mlops.yaml, an action input or an environment variable is wrong or missing."""

    title = "configuration error"


class ServiceError(MlopsError):
    """A service the step depends on failed: the message names it."""

    exit_code = EXIT_SERVICE
    title = "service error"


class CommandFailed(MlopsError):
    """The user's command ran and failed; the step exits with the command's own status."""

    title = "command failed"

    def __init__(self, message: str, exit_code: int, hint: str = "") -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


class StepCancelled(MlopsError):
    """The step got SIGINT or SIGTERM (a cancelled job): it exits 128 + the signal."""

    title = "cancelled"

    def __init__(self, message: str, signum: int, hint: str = "") -> None:
        super().__init__(message, hint)
        self.signum = signum
        self.exit_code = EXIT_CANCELLED + signum


class Cancelled(KeyboardInterrupt):
    """Raised by our SIGINT/SIGTERM handler. Like KeyboardInterrupt it is no Exception, so a
    client library's `except Exception` cannot swallow it, and code that cleans up on Ctrl-C
    cleans up on SIGTERM too. Verbs turn it into StepCancelled at their boundary."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = EXIT_CANCELLED + signum
