"""Guards that nest: the first to enter puts the checks in, the last to leave takes them out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

G = TypeVar("G")


class GuardStack(Generic[G]):
    """The guards that are on, innermost last; ``install``/``uninstall`` run at the ends."""

    def __init__(self, install: Callable[[], None], uninstall: Callable[[], None]) -> None:
        self.lock = threading.Lock()  # entering and leaving, installing, and recording refusals
        self.active: tuple[G, ...] = ()  # replaced whole, so other threads read a snapshot
        self._install, self._uninstall = install, uninstall

    def push(self, guard: G) -> None:
        with self.lock:
            if not self.active:
                self._install()
            self.active = (*self.active, guard)

    def pop(self, guard: G) -> None:
        """Take ``guard`` off (its last entry, for a guard entered twice); nothing if it is not on."""
        with self.lock:
            if guard not in self.active:
                return
            index = len(self.active) - 1 - self.active[::-1].index(guard)
            self.active = self.active[:index] + self.active[index + 1 :]
            if not self.active:
                self._uninstall()
