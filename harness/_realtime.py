"""The machine's real clocks, kept where no time mock reaches them.

freezegun replaces every module attribute that *is* `time.monotonic`, `time.perf_counter` or `time.time` with
its fake (and a function that looks them up on the `time` module at call time sees the fake too),
so harness keeps the real functions as attributes of a class: freezegun's module scan does not
look inside classes. time-machine leaves these two clocks alone.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable


def _real(name: str) -> Callable[[], float]:
    current: Callable[[], float] = getattr(time, name)
    if isinstance(current, types.BuiltinFunctionType):  # the C function: nothing has replaced it
        return current
    # Imported while freezegun is active: it keeps the originals as `real_<name>`.
    return getattr(sys.modules["freezegun.api"], f"real_{name}")  # type: ignore[no-any-return]


class RealClock:
    """`monotonic()`, `perf_counter()`, `time()` and `process_time()` as the machine tells them, whatever is frozen."""

    monotonic = staticmethod(_real("monotonic"))
    perf_counter = staticmethod(_real("perf_counter"))
    process_time = staticmethod(time.process_time)  # no time mock replaces it
    time = staticmethod(_real("time"))
