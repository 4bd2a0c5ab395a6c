"""SIGINT/SIGTERM for a step that creates things it must clean up (an MLflow run, processes).

Without a handler, SIGTERM kills Python on the spot: no `finally` runs, and a run created a
moment earlier stays RUNNING forever. So the handlers go in before anything is created, and:

- by default a signal raises `Cancelled` at once: nothing needs finishing, `finally` blocks
  clean up (the raise is a BaseException, so no `except Exception` in a client swallows it);
- inside `deferred()` a signal is only recorded: a request that creates or closes a resource
  must finish, or we would not know what to clean up. The code checks `signum` afterwards, and
  leaving the block raises if a signal came.

Only the first signal counts: GitHub sends SIGINT, then SIGTERM a few seconds later, and the
exit status reports the first (130 or 143). Later ones never interrupt the clean-up.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

from .errors import Cancelled, MlopsError, StepCancelled

WATCHED = (signal.SIGINT, signal.SIGTERM)


class Cancellation:
    """Install with `with Cancellation() as cancellation:`; restores the previous handlers."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = 0
        self._previous: dict[int, object] = {}

    @property
    def cancelled(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> Cancellation:
        # Python only lets the main thread install handlers; elsewhere signals stay as they are.
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in WATCHED}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already cancelled: the clean-up under way must not be interrupted
        self.signum = signum
        if not self._deferring:
            raise Cancelled(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Record signals instead of raising, until the block ends; then raise if one came."""
        self._deferring += 1
        try:
            yield
        except MlopsError:
            # The request failed while we were being cancelled: the cancellation is the news.
            if self.signum is not None and self._deferring == 1:
                raise Cancelled(self.signum) from None
            raise
        finally:
            self._deferring -= 1
        if self.signum is not None and not self._deferring:
            raise Cancelled(self.signum)


@contextmanager
def cancellable(what: str) -> Iterator[Cancellation]:
    """A verb's whole body: a signal anywhere ends it as a one-line error with 130/143."""
    with Cancellation() as cancellation:
        try:
            yield cancellation
        except Cancelled as cancelled:
            raise as_step_error(what, cancelled) from None


def as_step_error(what: str, cancelled: Cancelled) -> StepCancelled:
    return StepCancelled(
        f"{what} was cancelled ({signal.Signals(cancelled.signum).name})", cancelled.signum
    )
