"""Timing assertions under varying load: how often they fail when nothing got slower, and how often
they catch a 1.5x slowdown.

The measured code is ~2 ms of pure-Python work (`work`); its budgets are set on the quiet machine,
before any load starts:

- absolute: ``assert_runs_within(work, budget)``, the budget 1.3x the fastest of 41 runs of `work`
  as on the reference machine (the fastest, as the calibration takes it: robust to a busy moment;
  converted with the fastest of 41 runs of the reference workload timed in turn with them);
- relative: ``assert_not_slower_than(work, half_work, factor=...)``, the factor 1.3x the quiet
  median ratio (about 2): a baseline that does the same kind of work.

Then, all at once on the machine's cores (nothing pinned): a process spinning without pause; a
process that alternates busy and idle periods of random length (5-400 ms each); and, with a
PostgreSQL URL, a client keeping the database server busy with queries. Under that load, each trial
is one assertion as a test writes it:

- false failures: the unchanged `work` (absolute and relative forms);
- detection: `work` made 1.5x slower (1.5x the iterations), which must fail.

An undecided outcome counts as a pass for false failures and as a miss for detection (the default
policy passes it with a warning). Side by side, in the same load, the procedure harness used before
(one batch: the median of 5 samples after a warm-up, or of 7 interleaved pairs, against the same
budget). Figures: ``timing_false_failure_rate`` (target < 0.005), ``timing_detection_rate``
(target >= 0.95), ``timing_median_samples`` (samples a decision took, the reference workload's runs
not counted), per form, and ``timing_previous_*`` for the one-batch procedure.

    python bench/bench_timing.py [--postgres-url URL] [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from common import command_line, merge_results, print_figures

from harness import TimingUndecidedWarning, assert_not_slower_than, assert_runs_within, measure
from harness.timing import Calibration, calibrate, machine

ITERATIONS = 40_000


def work(scale: float = 1.0) -> int:
    return sum(i * i for i in range(int(ITERATIONS * scale)))


def spin_forever(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def spin_on_and_off(stop: Any) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        busy_until = time.perf_counter() + rng.uniform(0.005, 0.4)
        while time.perf_counter() < busy_until and not stop.is_set():
            sum(i * i for i in range(2_000))
        time.sleep(rng.uniform(0.005, 0.4))


def query_forever(stop: Any, url: str) -> None:
    """Keep the server busy from a test database of its own (the URL's database need not exist)."""
    import asyncio

    from sqlalchemy import text

    from harness.db import TestDatabase

    async def main() -> None:
        # A name per process: two benches at once must not drop each other's database.
        database = TestDatabase(url, name=f"bench_timing_load_{os.getpid()}")
        engine = await database.create()
        try:
            async with engine.connect() as connection:
                while not stop.is_set():
                    await connection.execute(text("SELECT count(*) FROM generate_series(1, 200000)"))
        finally:
            await database.drop()

    asyncio.run(main())


class Load:
    """The varying load while it runs: what it is, and a check that every part is still running."""

    def __init__(self, workers: list[Any], described: list[str], stop: Any) -> None:
        self.workers, self.described, self.stop = workers, described, stop

    def check(self, when: str) -> None:
        """Stop with an error if a part of the load died: a load that silently stopped would flatter the figures."""
        if dead := [self.described[i] for i, worker in enumerate(self.workers) if not worker.is_alive()]:
            self.stop.set()
            msg = f"load generator(s) stopped {when}: {', '.join(dead)} (see the traceback above)"
            raise SystemExit(msg)


@contextlib.contextmanager
def load(postgres_url: str | None) -> Iterator[Load]:
    """The varying load, running while the block runs."""
    stop = multiprocessing.Event()
    workers = [
        multiprocessing.Process(target=spin_forever, args=(stop,), daemon=True),
        multiprocessing.Process(target=spin_on_and_off, args=(stop,), daemon=True),
    ]
    described = ["1 process spinning", "1 process busy/idle in random 5-400 ms periods"]
    if postgres_url:
        workers.append(multiprocessing.Process(target=query_forever, args=(stop, postgres_url), daemon=True))
        described.append("1 client keeping PostgreSQL busy (generate_series counts)")
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    running = Load(workers, described, stop)
    try:
        running.check("at start")
        yield running
        running.check("during the trials")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)


def trial(check: Callable[[float], Any], scale: float) -> tuple[str, int]:
    """One assertion: 'pass', 'fail' or 'undecided', and the samples it took."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TimingUndecidedWarning)
        try:
            result = check(scale)
        except AssertionError as error:
            counted = re.search(r"over (\d+) sample\(s\)", str(error))
            return "fail", int(counted.group(1)) if counted else 0
    samples = (
        result
        if isinstance(result, int)
        else len((result[0] if isinstance(result, tuple) else result).samples)
    )
    undecided = any(issubclass(w.category, TimingUndecidedWarning) for w in caught)
    return ("undecided" if undecided else "pass"), samples


def main() -> None:
    args = command_line(__doc__)
    trials, detections = (150, 60) if args.quick else (1000, 500)

    # Budgets, set on the quiet machine.
    machine()  # the run's calibration, as a test run takes it at its first timing assertion
    # `work` and the reference workload timed in turns, the fastest of each: the budget is `work`
    # as on the reference machine, whatever the machine did meanwhile (a budget set while it was
    # busy would be inflated, and hide the slowdown it is there to catch).
    quiet, reference = [], []
    for _ in range(41):
        quiet.append(_timed(work))
        reference.append(calibrate(runs=1).reference)
    calibration = Calibration(min(reference))
    budget = 1.3 * min(quiet) / calibration.factor
    ratios = [_timed(work) / _timed(lambda: work(0.5)) for _ in range(41)]
    factor = 1.3 * statistics.median(ratios)
    print(
        f"\ntiming: work() {min(quiet) * 1e3:.2f} ms fastest, {statistics.median(quiet) * 1e3:.2f} ms median "
        f"({calibration.describe()}); "
        f"absolute budget {budget * 1e3:.2f} ms, relative factor {factor:.2f}x against work(0.5)"
    )

    forms: dict[str, Callable[[float], Any]] = {
        "absolute": lambda scale: assert_runs_within(lambda: work(scale), budget),
        "relative": lambda scale: assert_not_slower_than(
            lambda: work(scale), lambda: work(0.5), factor=factor
        ),
        "previous_absolute": lambda scale: one_batch_absolute(lambda: work(scale), budget),
        "previous_relative": lambda scale: one_batch_relative(lambda: work(scale), lambda: work(0.5), factor),
    }
    figures: dict[str, Any] = {}
    samples_needed: list[int] = []
    false_failures = undecided_total = detected_total = detection_trials = 0
    previous_failures = previous_detected = 0
    started = time.perf_counter()
    with load(args.postgres_url) as running:
        for name, form in forms.items():
            outcomes, needed = [], []
            for n in range(trials + detections):
                slowed = n >= trials
                outcome, samples = trial(form, 1.5 if slowed else 1.0)
                outcomes.append((slowed, outcome))
                needed.append(samples)
            unchanged = [o for slowed, o in outcomes if not slowed]
            slower = [o for slowed, o in outcomes if slowed]
            if name.startswith("previous"):
                figures[f"timing_{name}_false_failure_rate"] = round(
                    unchanged.count("fail") / len(unchanged), 4
                )
                figures[f"timing_{name}_detection_rate"] = round(slower.count("fail") / len(slower), 4)
                previous_failures += unchanged.count("fail")
                previous_detected += slower.count("fail")
                continue
            samples_needed.extend(needed[:trials])
            figures[f"timing_false_failure_rate_{name}"] = round(unchanged.count("fail") / len(unchanged), 4)
            figures[f"timing_undecided_rate_{name}"] = round(unchanged.count("undecided") / len(unchanged), 4)
            figures[f"timing_detection_rate_{name}"] = round(slower.count("fail") / len(slower), 4)
            false_failures += unchanged.count("fail")
            undecided_total += unchanged.count("undecided")
            detected_total += slower.count("fail")
            detection_trials += len(slower)
    elapsed = time.perf_counter() - started
    figures = {
        "timing_false_failure_rate": round(false_failures / (2 * trials), 4),
        "timing_detection_rate": round(detected_total / detection_trials, 4),
        "timing_median_samples": statistics.median(samples_needed),
        "timing_previous_false_failure_rate": round(previous_failures / (2 * trials), 4),
        "timing_previous_detection_rate": round(previous_detected / detection_trials, 4),
        **figures,
        "timing_trials": 2 * trials,
        "timing_detection_trials": detection_trials,
    }
    print(f"load: {', '.join(running.described)}; {os.cpu_count()} cores; {elapsed:.0f} s of trials")
    print_figures(
        figures,
        {
            "timing_false_failure_rate": ("≤", 0.005),
            "timing_detection_rate": ("≥", 0.95),
        },
    )
    merge_results(args.output, figures)


def one_batch_absolute(fn: Callable[[], Any], budget: float) -> Any:
    """The procedure before: 1 warm-up, the median of 5 samples against the budget."""
    timing = measure(fn, repeat=5, warmup=1)
    if timing.median > budget * machine().factor:
        msg = f"median over {len(timing.samples)} sample(s)"
        raise AssertionError(msg)
    return timing


def one_batch_relative(fn: Callable[[], Any], baseline: Callable[[], Any], factor: float) -> Any:
    """The procedure before: 7 interleaved rounds, the ratio of the medians against the factor."""
    mine, theirs = [], []
    for n in range(8):
        for which in (baseline, fn) if n % 2 == 0 else (fn, baseline):
            elapsed = _timed(which)
            if n:  # the first round warms up
                (mine if which is fn else theirs).append(elapsed)
    if statistics.median(mine) / statistics.median(theirs) > factor:
        msg = f"ratio over {len(mine)} sample(s)"
        raise AssertionError(msg)
    return len(mine)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
