"""How often a timing budget fails when nothing got slower, with a CPU-bound load on the other core.

A ~2 ms CPU-bound function is calibrated (median of 21 samples) while a second process spins on the
other core; the budget is then 2x that median. Each trial is what a test writes:

- ``harness``: ``measure(fn).assert_within(budget)``: 1 warm-up + the median of 5 samples.
- ``single``: one timed call against the same budget, as in a hand-written
  ``start = time.time(); ...; assert time.time() - start < budget``.

Figures: the fraction of trials that failed (target for harness: < 1 in 200, 0.005).

    python bench/bench_timing.py [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import multiprocessing
import os
import time

from common import command_line, merge_results, print_figures

from harness import measure


def work() -> int:
    return sum(i * i for i in range(20_000))


def spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main() -> None:
    args = command_line(__doc__)
    trials = 200 if args.quick else 1000
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the measured code on one core, the load on the other
    stop = multiprocessing.Event()
    load = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    load.start()
    try:
        time.sleep(0.2)  # the load is running
        calibration = measure(work, repeat=21, warmup=3, label="work")
        budget = 2 * calibration.median
        harness_failures = single_failures = 0
        for _ in range(trials):
            try:
                measure(work).assert_within(budget)
            except AssertionError:
                harness_failures += 1
            single = measure(work, repeat=1, warmup=0)
            single_failures += single.samples[0] > budget
    finally:
        stop.set()
        load.join()
    print(
        f"\ntiming: work() median {calibration.median * 1e3:.2f} ms under load, budget {budget * 1e3:.2f} ms, "
        f"{trials} trials each; failures: harness {harness_failures}, single sample {single_failures}"
    )
    figures = {
        "timing_false_failure_rate": round(harness_failures / trials, 4),
        "timing_single_sample_false_failure_rate": round(single_failures / trials, 4),
        "timing_trials": trials,
    }
    print_figures(figures, {"timing_false_failure_rate": ("≤", 0.005)})
    merge_results(args.output, figures)


if __name__ == "__main__":
    main()
