"""Every process a training command starts, found and ended, wherever it moved.

Signalling the child's process group is not enough: a command can start a process in a new
session (`setsid`, `start_new_session=True`, a daemon's double fork), out of the group's reach,
and once its parent exits it is re-parented away from us, so a later walk of our tree misses it.
On Linux we become a child subreaper (PR_SET_CHILD_SUBREAPER) while the command runs: orphans
of our descendants are re-parented to us instead of to init, so everything the command started
stays in our tree, where a /proc walk finds it, and we reap what we kill. This needs no
privileges (a cgroup would) and no extra dependency (psutil comes only through dvc and is
untyped; the walk is a few lines). Elsewhere we end what is still attached to our tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from types import TracebackType

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
SWEEP_ROUNDS = 50  # SIGKILL rounds before giving up on a tree that keeps forking
POLL_SECONDS = 0.05


def _set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process /proc shows (empty without /proc)."""
    table: dict[int, tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_bytes()
        except OSError:
            continue  # gone since the listing
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2:
            table[int(entry)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
    """pid -> state of every descendant of `root`."""
    table = _process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (parent, _state) in table.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                stack.append(child)
    return found


class ProcessTree:
    """The processes started under us inside the block (not those that existed before)."""

    def __init__(self) -> None:
        self._me = os.getpid()
        self._before: set[int] = set()
        self._subreaper = False

    def __enter__(self) -> ProcessTree:
        self._before = set(descendants(self._me))
        self._subreaper = _set_subreaper(True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._subreaper:
            _set_subreaper(False)

    def _members(self, spare: int | None) -> dict[int, str]:
        # Skip what existed before, and `spare`: the direct child, which its Popen must reap.
        found = descendants(self._me)
        return {pid: state for pid, state in found.items() if pid not in self._before | {spare}}

    def signal(self, signum: int, spare: int | None = None) -> None:
        """Send `signum` to every live process of the tree but `spare`."""
        for pid, state in self._members(spare).items():
            if state != "Z":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def _reap(self, spare: int | None) -> bool:
        """Reap our exited children (orphans re-parented to us); True if none is left alive."""
        alive = False
        for pid, state in self._members(spare).items():
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            else:
                alive = True
        return not alive

    def end(self, grace: float, spare: int | None = None) -> None:
        """SIGTERM what is left, wait up to `grace` seconds, then SIGKILL and reap it all."""
        if self._reap(spare):
            return
        self.signal(signal.SIGTERM, spare)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self._reap(spare):
                return
            time.sleep(POLL_SECONDS)
        for _ in range(SWEEP_ROUNDS):
            self.signal(signal.SIGKILL, spare)
            time.sleep(POLL_SECONDS)
            if self._reap(spare) and not self._members(spare):
                return
