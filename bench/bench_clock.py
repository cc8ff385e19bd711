"""The clock: what a freeze costs with each backend, against plain freezegun, and advance() over 1,000 timers.

With ~800 modules imported (freezegun's cost grows with them), in interleaved rounds, each case is
one whole `with ...: pass` as a test writes it, construction included:

- ``plain``: ``freezegun.freeze_time("2024-01-15 20:00:00")``.
- ``default``: ``harness.freeze_time("2024-01-15 20:00:00")`` (freezegun backend).
- ``fast``: ``harness.freeze_time("2024-01-15 20:00:00", backend="time-machine")``.

Figures: µs per freeze + unfreeze (medians), default / plain (target ≤ 1: no slower), plain / fast
(target ≥ 100), fast (target ≤ 50 µs); and the wall time of ``await clock.advance(hours=1)`` across
1,000 timers due within the hour, each backend.

    python bench/bench_clock.py [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import statistics
import sys
import time

import freezegun
from common import command_line, merge_results, print_figures

from harness import freeze_time
from harness._realtime import RealClock  # freezegun freezes time.perf_counter inside a freeze

MODULES = 800
WHEN = "2024-01-15 20:00:00"
# Modules that open windows, print, or start things when imported.
UNIMPORTABLE = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "ensurepip",
    "venv",
    "lib2to3",
}


def load_modules(target: int) -> int:
    import fastapi  # noqa: F401  # a realistic service's imports first: FastAPI, pydantic, SQLAlchemy, httpx
    import httpx  # noqa: F401
    import respx  # noqa: F401
    import sqlalchemy.ext.asyncio  # noqa: F401

    for name in sorted(sys.stdlib_module_names):
        if len(sys.modules) >= target:
            break
        if name.startswith("_") or name in UNIMPORTABLE:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # platform modules that do not import here
            continue
    return len(sys.modules)


def plain() -> None:
    with freezegun.freeze_time(WHEN):
        pass


def default() -> None:
    with freeze_time(WHEN):
        pass


def fast() -> None:
    with freeze_time(WHEN, backend="time-machine"):
        pass


def bench_freeze(rounds: int, block: int = 20) -> dict[str, float]:
    """Blocks of `block` freezes per case, the cases' order rotated each round.

    Blocks, not single freezes in turn: a freezegun scan of 800 modules evicts the CPU caches a
    30 µs freeze right after it would then pay for, which no suite using one backend sees. As
    timeit does, no garbage collection inside a block.
    """
    cases = {"plain": plain, "default": default, "fast": fast}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()  # warm freezegun's module cache and imports
    for n in range(rounds):
        for name in list(cases)[n % 3 :] + list(cases)[: n % 3]:
            fn = cases[name]
            gc.collect()
            gc.disable()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e6)
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


async def advance_over_timers(backend: str, timers: int) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    with freeze_time(WHEN, backend=backend) as clock:  # type: ignore[arg-type]
        for n in range(timers):
            loop.call_later(3600 * (n + 1) / (timers + 1), fired.append, n)
        start = RealClock.perf_counter()
        await clock.advance(hours=1)
        elapsed = RealClock.perf_counter() - start
    return elapsed * 1e3, len(fired)


def main() -> None:
    args = command_line(__doc__)
    loaded = load_modules(MODULES)
    medians = bench_freeze(3 if args.quick else 15)
    print(
        f"\nclock: {loaded} modules loaded; µs per freeze + unfreeze (medians): "
        + "  ".join(f"{k}={v:.1f}" for k, v in medians.items())
    )
    advance = {}
    for backend in ("freezegun", "time-machine"):
        ms, fired = asyncio.run(advance_over_timers(backend, 1000))
        assert fired == 1000, f"advance(hours=1) fired {fired} of 1000 timers"
        advance[backend] = ms
    print(
        "advance(hours=1) over 1,000 due timers, ms: " + "  ".join(f"{k}={v:.1f}" for k, v in advance.items())
    )
    figures = {
        "clock_modules_loaded": loaded,
        "clock_freeze_us_plain_freezegun": round(medians["plain"], 1),
        "clock_freeze_us_default": round(medians["default"], 1),
        "clock_freeze_us_fast": round(medians["fast"], 1),
        "clock_default_vs_freezegun": round(medians["default"] / medians["plain"], 3),
        "clock_speedup_vs_freezegun_fast": round(medians["plain"] / medians["fast"], 1),
        "clock_advance_1000_timers_ms_default": round(advance["freezegun"], 1),
        "clock_advance_1000_timers_ms_fast": round(advance["time-machine"], 1),
    }
    targets = {
        "freeze_us_fast": ("≤", 50.0),
        "default_vs_freezegun": ("≤", 1.0),
        "speedup_vs_freezegun": ("≥", 100.0),
    }
    print_figures(figures, targets)
    merge_results(args.output, figures)


if __name__ == "__main__":
    main()
