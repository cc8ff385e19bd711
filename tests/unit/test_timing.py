"""harness.timing: measurements on a clock no time mock reaches, and budgets whose failures show the samples.

Pass/fail cases use margins no machine closes (a 30 ms sleep against a 1 ms budget, a no-op
against 10 s); exact messages come from Timing values built by hand, with the machine calibrated
as the reference machine (messages otherwise carry this machine's factor).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import warnings
from typing import TYPE_CHECKING

import freezegun
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from harness import (
    Timing,
    TimingError,
    TimingUndecidedWarning,
    TimingWarning,
    assert_completes_within,
    assert_not_slower_than,
    assert_runs_within,
    freeze_time,
    measure,
    timing,
)
from harness.timing import REFERENCE_SECONDS, Calibration

if TYPE_CHECKING:
    from collections.abc import Awaitable


def nothing() -> None:
    pass


@pytest.fixture(autouse=True)
def no_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are pinned as written; a CI's $HARNESS_TIMING_SLACK would change them."""
    monkeypatch.delenv("HARNESS_TIMING_SLACK", raising=False)
    monkeypatch.delenv("HARNESS_TIMING_UNDECIDED", raising=False)


@pytest.fixture
def reference_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine calibrated as the reference machine: budgets as written, whatever its load."""
    monkeypatch.setattr(timing, "_machine", Calibration(REFERENCE_SECONDS))
    monkeypatch.setattr(timing, "calibrate", lambda runs=9: Calibration(REFERENCE_SECONDS))


def compute(references: int) -> None:
    """CPU work: the reference workload, `references` times (about REFERENCE_SECONDS each, here)."""
    for _ in range(references):
        timing._reference_work()


async def test_sync_and_async_cannot_be_compared() -> None:
    async def quick() -> None:
        pass

    with pytest.raises(TimingError, match="must be both sync or both async"):
        assert_not_slower_than(quick, nothing)
    with pytest.raises(TimingError, match="must be both sync or both async"):
        await assert_not_slower_than(nothing, quick)


def test_measure_warms_up_then_samples() -> None:
    calls: list[int] = []
    timing = measure(lambda: calls.append(1), repeat=4, warmup=2)
    assert len(calls) == 6
    assert len(timing.samples) == 4
    assert len(timing.warmup) == 2
    assert timing.label.startswith("lambda at test_timing.py:")
    assert measure(nothing).label == "nothing"


async def test_measure_awaits_async_code() -> None:
    timing = await measure(lambda: asyncio.sleep(0.01), repeat=3)
    assert len(timing.samples) == 3
    assert timing.min >= 0.01


@pytest.mark.parametrize("freeze", ["harness-freezegun", "harness-time-machine", "plain-freezegun"])
def test_frozen_time_does_not_stop_the_stopwatch(freeze: str) -> None:
    if freeze == "plain-freezegun":
        frozen = freezegun.freeze_time("2024-01-15")
    else:
        frozen = freeze_time("2024-01-15", backend=freeze.removeprefix("harness-"))  # type: ignore[arg-type]
    with frozen:
        assert time.perf_counter() == time.perf_counter() or freeze == "harness-time-machine"
        timing = measure(lambda: time.sleep(0.02), repeat=2, warmup=0)
        with assert_completes_within(10) as block:
            time.sleep(0.02)
    assert timing.min >= 0.02
    assert block.timing is not None
    assert block.timing.samples[0] >= 0.02


def test_statistics() -> None:
    timing = Timing("t", tuple(float(n) for n in range(1, 21)))
    assert (timing.min, timing.median, timing.p95, timing.max) == (1, 10.5, 19.05, 20)
    assert Timing("one", (0.3,)).p95 == 0.3
    with pytest.raises(TimingError, match=r"Unknown statistic 'mean'; choose median, p95, min or max\."):
        timing.statistic("mean")  # type: ignore[arg-type]


@pytest.mark.usefixtures("reference_machine")
def test_a_budget_failure_shows_the_distribution() -> None:
    timing = Timing("import_contacts", (0.7, 0.5, 0.6), warmup=(0.9,))
    timing.assert_within(0.7)
    with pytest.raises(AssertionError) as raised:
        timing.assert_within(0.2)
    assert str(raised.value) == (
        "import_contacts took 600.0 ms (median of 3), over its budget of 200.0 ms.\n"
        "  samples (sorted): 500.0 ms 600.0 ms 700.0 ms\n"
        "  min 500.0 ms · median 600.0 ms · p95 690.0 ms · max 700.0 ms over 3 sample(s)\n"
        "  warm-up (not counted): 900.0 ms\n"
        "If this machine is slower or busier than budgets allow, set $HARNESS_TIMING_SLACK (a factor every "
        "budget is multiplied by) rather than loosening the test."
    )
    with pytest.raises(AssertionError, match=r"took 690.0 ms \(p95 of 3\)"):
        timing.assert_within(0.65, statistic="p95")


@pytest.mark.usefixtures("reference_machine")
def test_the_slack_variable_multiplies_every_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = Timing("report", (0.5, 0.6, 0.7))
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "4")
    timing.assert_within(0.2)
    timing.assert_not_slower_than(Timing("baseline", (0.1,)), factor=1.5)
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "2")
    with pytest.raises(
        AssertionError, match=r"over its budget of 400.0 ms \(200.0 ms x\$HARNESS_TIMING_SLACK=2\)"
    ):
        timing.assert_within(0.2)
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "fast")
    with pytest.raises(TimingError) as raised:
        timing.assert_within(0.2)
    assert (
        str(raised.value)
        == "$HARNESS_TIMING_SLACK must be a number of at least 1, such as 2 or 1.5; it is 'fast'."
    )


def test_a_relative_failure_shows_both_distributions() -> None:
    slow, base = Timing("list_campaigns", (0.030, 0.032, 0.031)), Timing("health", (0.010, 0.011, 0.010))
    slow.assert_not_slower_than(base, factor=3.5)
    with pytest.raises(AssertionError) as raised:
        slow.assert_not_slower_than(base, factor=1.5)
    assert str(raised.value).splitlines()[0] == (
        "list_campaigns took 31.0 ms (median), 3.10x the baseline health (10.0 ms); allowed 1.5x."
    )
    assert "health (baseline):\n  samples (sorted): 10.0 ms 10.0 ms 11.0 ms" in str(raised.value)


def test_assert_not_slower_than_interleaves_the_two() -> None:
    order: list[str] = []
    # Each call computes (~1 ms), so that a preemption on a busy machine cannot make a ratio 1000x.
    candidate, baseline = assert_not_slower_than(
        lambda: (order.append("fn"), compute(1)),
        lambda: (order.append("base"), compute(1)),
        factor=1000,
        warmup=1,
    )
    assert order[:8] == ["base", "fn", "fn", "base", "base", "fn", "fn", "base"]
    assert len(candidate.samples) == len(baseline.samples) == 7  # all within at the first look


def test_assert_not_slower_than_fails_a_slow_function() -> None:
    with pytest.raises(AssertionError) as raised:
        assert_not_slower_than(lambda: compute(2), nothing, factor=1.5)
    first = str(raised.value).splitlines()[0]
    assert re.fullmatch(
        r"lambda at test_timing.py:\d+ is slower than 1.5x the baseline nothing: the median of \d+ paired "
        r"ratios is [\d.]+x \(\d+ of \d+ over the allowed 1.5x\)\.",  # one ratio may fall under, in a load
        first,
    )


async def test_assert_not_slower_than_async() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    async def nap() -> None:
        await asyncio.sleep(0.001)

    await assert_not_slower_than(quick, quick, factor=1000)
    with pytest.raises(AssertionError, match=r"is slower than 1\.5x the baseline nap"):
        await assert_not_slower_than(lambda: asyncio.sleep(0.03), nap, factor=1.5)  # both wait


# -- deciding with evidence ---------------------------------------------------------------------


def test_a_budget_with_room_passes_after_seven_samples() -> None:
    """Seven samples all within: the median is within with 99% confidence, nothing more is timed."""
    timing = assert_runs_within(nothing, 1.0)
    assert (len(timing.samples), len(timing.warmup)) == (7, 1)


@pytest.mark.usefixtures("reference_machine")
async def test_a_broken_budget_fails_once_ten_samples_agree() -> None:
    """Over budget: the reference workload is timed next to each further sample; 10 of 10 over decides.
    Under load a sample may come out within (its reference run was the one slowed), and it takes more."""
    with pytest.raises(AssertionError) as raised:
        await assert_runs_within(lambda: asyncio.sleep(0.005), 0.001)
    lines = str(raised.value).splitlines()
    verdict = re.fullmatch(
        r"lambda at test_timing.py:\d+ is over its budget of 1.0 ms: the median of its samples, as on the "
        r"reference machine, is [\d.]+ ms \((\d+) of (\d+) over the budget\)\.",
        lines[0],
    )
    assert verdict, lines[0]
    over, adjusted = int(verdict[1]), int(verdict[2])
    # As likely as that by chance, were the median at the budget: at most 1 in 1,000.
    assert sum(math.comb(adjusted, i) for i in range(over, adjusted + 1)) / 2**adjusted <= 1e-3
    assert lines[2].endswith(f"over {7 + adjusted} sample(s)")  # the first 7, then those with the reference
    assert lines[4].startswith(
        "  as on a quiet reference machine (the reference workload timed next to each sample): this machine "
        "computes x"
    )
    assert lines[5].startswith("  adjusted (sorted): ")
    assert lines[-1].startswith(
        "If this machine is slower or busier than budgets allow, set $HARNESS_TIMING_SLACK"
    )


def test_load_is_not_taken_for_slowness() -> None:
    """Three reference workloads against a budget of five: within, even when load stretches each run
    (the reference workload timed next to it is stretched alike)."""
    timing = assert_runs_within(lambda: compute(3), 5 * REFERENCE_SECONDS, max_time=5)
    assert len(timing.samples) >= 7


def test_time_queued_for_a_core_is_not_taken_for_slowness(
    monkeypatch: pytest.MonkeyPatch, reference_machine: None
) -> None:
    """A call preempted for 4 ms (as Linux reports it) against a 1 ms budget: load, not slowness."""
    queued = [0.0]

    def preempted() -> None:
        started = time.perf_counter()
        time.sleep(0.004)  # all of it reported as queued, however long the machine made it
        queued[0] += time.perf_counter() - started

    monkeypatch.setattr(timing, "_queued", lambda: queued[0])
    monkeypatch.setattr(timing, "_QUEUEING_KNOWN", True)
    assert_runs_within(preempted, 0.001, max_time=2)
    monkeypatch.setattr(timing, "_QUEUEING_KNOWN", False)  # unknown: the same waiting is slowness
    with pytest.raises(AssertionError, match="is over its budget"):
        assert_runs_within(preempted, 0.001, max_time=2)


def test_a_preemption_outside_the_call_is_not_taken_out_of_it(
    monkeypatch: pytest.MonkeyPatch, reference_machine: None
) -> None:
    """Each read of the queueing count comes after 5 ms queued for a core (a busy machine): that
    time is not the call's, and a 4 ms sleep against a 1 ms budget stays over it, never 0 s."""
    queued = [0.0]

    def preempted_read() -> float:
        time.sleep(0.005)
        queued[0] += 0.005
        return queued[0]

    monkeypatch.setattr(timing, "_queued", preempted_read)
    monkeypatch.setattr(timing, "_QUEUEING_KNOWN", True)
    with pytest.raises(AssertionError, match=r"is over its budget of 1\.0 ms"):
        assert_runs_within(lambda: time.sleep(0.004), 0.001, max_time=2)


def test_a_slower_machine_gets_room_for_computing_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """3x slower than the reference machine: two reference workloads fit a budget of one; 4 ms of
    sleep never fits 2 ms. Slower in both looks: the run's calibration (the first 7 samples) and the
    reference workload timed next to each later sample (a preempted sample sends it there)."""
    monkeypatch.setattr(timing, "REFERENCE_SECONDS", REFERENCE_SECONDS / 3)
    monkeypatch.setattr(timing, "_machine", Calibration(REFERENCE_SECONDS))
    monkeypatch.setattr(timing, "calibrate", lambda runs=9: Calibration(REFERENCE_SECONDS))
    assert_runs_within(lambda: compute(2), 1.2 * REFERENCE_SECONDS, max_time=2)
    with pytest.raises(AssertionError, match=r"is over its budget of 2\.0 ms"):
        assert_runs_within(lambda: time.sleep(0.004), 0.002, max_time=2)


def test_a_calibration_taken_while_busy_does_not_hide_a_slowdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's calibration says 4x slower (the machine was busy at start-up); it is not now. Three
    reference workloads against a budget of 1.2 fit at 4x, so the first look alone would pass them:
    the reference workload re-timed shows today's speed, and the budget is judged at it."""
    quiet = min(timing.calibrate(25).reference for _ in range(3))
    monkeypatch.setattr(timing, "REFERENCE_SECONDS", quiet)  # this machine is the reference machine
    monkeypatch.setattr(timing, "_machine", Calibration(4 * quiet))
    with pytest.raises(AssertionError, match=r"is over its budget of .*\(\d+ of \d+ over the budget\)"):
        assert_runs_within(lambda: compute(3), 1.2 * quiet, max_time=5)


def test_a_machine_too_noisy_to_tell_passes_with_a_warning_or_fails_when_told(
    monkeypatch: pytest.MonkeyPatch, reference_machine: None
) -> None:
    """Samples on both sides of the budget, half and half: undecided at the time cap, then the policy."""
    units = iter([0, 12] * 1000)

    def straddles() -> None:
        compute(next(units))

    budget = 3 * REFERENCE_SECONDS
    with pytest.warns(TimingUndecidedWarning) as warned:
        assert_runs_within(straddles, budget, max_time=0.2)
    message = str(warned[0].message)
    assert message.startswith(
        "harness could not tell whether straddles is within its budget of 2.4 ms: the machine was too noisy for "
    )
    assert message.endswith(
        "Set $HARNESS_TIMING_UNDECIDED=fail (or undecided='fail') to fail instead, or give the budget room."
    )
    monkeypatch.setenv("HARNESS_TIMING_UNDECIDED", "fail")
    with pytest.raises(
        AssertionError, match=r"^harness could not tell whether straddles(?s:.*)HARNESS_TIMING_SLACK"
    ):
        assert_runs_within(straddles, budget, max_time=0.2)
    monkeypatch.setenv("HARNESS_TIMING_UNDECIDED", "maybe")
    with pytest.raises(TimingError, match=r"'pass' or 'fail' \(\$HARNESS_TIMING_UNDECIDED\); got 'maybe'"):
        assert_runs_within(straddles, budget)


def test_min_passes_on_one_sample_within_and_max_fails_on_one_over() -> None:
    """Load only adds time: one sample within proves `min`; one over disproves `max`."""
    budget = 2 * REFERENCE_SECONDS
    units = iter([0] + [8] * 100)
    assert_runs_within(lambda: compute(next(units)), budget, statistic="min", warmup=0)
    units = iter([0] * 7 + [8] + [0] * 100)  # the first 7 are not judged against the load
    with pytest.raises(AssertionError, match="the max of its samples"):
        assert_runs_within(lambda: compute(next(units)), budget, statistic="max", warmup=0)


def test_a_short_max_time_does_not_turn_a_slowdown_into_a_pass() -> None:
    """Ten times over a 0.4 ms budget, with 1 ms to decide: sampling goes on until the slowdown can
    fail (10 of 10 over), rather than ending undecided and passing with a warning."""
    with pytest.raises(AssertionError, match=r"is over its budget of 400 µs: .*\(10 of 10 over the budget\)"):
        assert_runs_within(lambda: time.sleep(0.004), 0.0004, max_time=0.001)
    # 50x: load would have to delay the baseline's wake-up by 33 ms for one pair to come out within.
    with pytest.raises(AssertionError, match=r"is slower than 1\.5x the baseline .*\(10 of 10 over"):
        assert_not_slower_than(lambda: time.sleep(0.05), lambda: time.sleep(0.001), max_time=0.001)


def test_a_baseline_doing_other_work_is_warned_about() -> None:
    """Waiting (sleep) against computing: their CPU shares differ, and load would move the ratio."""
    with pytest.warns(TimingWarning) as warned:
        assert_not_slower_than(lambda: time.sleep(0.001), lambda: compute(1), factor=100)
    assert re.fullmatch(
        r"lambda at test_timing.py:\d+ spends at most \d+% of its time computing in this process and the baseline "
        r"lambda at test_timing.py:\d+ \d+%: they do different kinds of work \(one waits, on a database or the "
        r"network\), which load slows differently, so their ratio moves with the machine's load\. Compare with "
        r"a baseline that does the same kind of work\.",
        str(warned[0].message),
    )


def test_a_failure_is_not_hidden_behind_the_warning_on_other_work() -> None:
    """A regression that adds waiting also changes the kind of work: the failure is raised, and no
    warning (an error under filterwarnings = error) stands in front of it; the note, when the
    shares tell, ends the message."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AssertionError, match=r"is slower than 1x the baseline") as raised:
            assert_not_slower_than(lambda: time.sleep(0.002), lambda: compute(1), factor=1)
    assert (
        "Note: " not in str(raised.value) or "different kinds of work" in str(raised.value).split("Note: ")[1]
    )


def test_the_calibration_gives_room_to_a_slower_machine_only() -> None:
    assert Calibration(2 * REFERENCE_SECONDS).factor == 2
    assert Calibration(REFERENCE_SECONDS / 2).factor == 1
    assert Calibration(2 * REFERENCE_SECONDS).describe() == (
        "this machine runs the reference workload in 1.6 ms (790 µs on the reference machine): budgets scaled x2.00"
    )
    assert timing.calibrate(3).reference > 0


@pytest.mark.usefixtures("reference_machine")
async def test_a_block_within_budget_passes_and_over_budget_fails() -> None:
    async with assert_completes_within(10) as block:
        await asyncio.sleep(0)
    assert block.timing is not None
    with pytest.raises(AssertionError) as raised:
        async with assert_completes_within(0.001):
            await asyncio.sleep(0.03)
    assert str(raised.value).startswith("The block took ")
    assert ", over its budget of 1.0 ms.\nIf this machine is slower or busier than budgets allow" in str(
        raised.value
    )


def test_a_block_that_raises_is_not_masked() -> None:
    with pytest.raises(KeyError) as raised, assert_completes_within(0.000001):
        time.sleep(0.01)
        msg = "missing"
        raise KeyError(msg)
    assert raised.value.__notes__[0].startswith("harness.timing: the timed block raised after ")
    assert raised.value.__notes__[0].endswith("; no budget was checked.")


def test_a_measured_function_that_raises_says_which_run() -> None:
    calls = iter(range(10))

    def flaky() -> None:
        if next(calls) == 3:
            msg = "third sample"
            raise ValueError(msg)

    with pytest.raises(ValueError, match="third sample") as raised:
        measure(flaky, repeat=5, warmup=1)
    assert raised.value.__notes__ == ["harness.timing: flaky raised during sample 3; no budget was checked."]


async def test_an_async_function_that_raises_before_its_awaitable_says_which_run() -> None:
    calls = iter(range(10))

    def flaky() -> Awaitable[None]:  # async by what it returns; raises on its third call
        if next(calls) == 2:
            msg = "second sample"
            raise ValueError(msg)
        return asyncio.sleep(0)

    with pytest.raises(ValueError, match="second sample") as raised:
        await assert_runs_within(flaky, 1.0)
    assert raised.value.__notes__ == ["harness.timing: flaky raised during sample 2; no budget was checked."]


@pytest.mark.usefixtures("reference_machine")
async def test_query_and_time_budgets_in_one_assertion(db_session: AsyncSession) -> None:
    async with assert_completes_within(10, max_queries=2) as block:
        await db_session.execute(select(1))
    assert block.timing is not None
    with pytest.raises(AssertionError) as raised:
        async with assert_completes_within(10, max_queries=2):
            for n in range(3):
                await db_session.execute(select(n))
    message = str(raised.value)
    assert message.startswith("The block ran 3 queries, over its budget of 2.\n  queries (3):\n  1. SELECT ")
    assert "SLACK" not in message  # a query count is no matter of a machine's speed
    with pytest.raises(
        AssertionError, match=r"^The block took .* over its budget of 1.0 ms and ran 3 queries"
    ):
        async with assert_completes_within(0.001, max_queries=2):
            for n in range(3):
                await db_session.execute(select(n))
            await asyncio.sleep(0.03)


def test_misuse_is_refused() -> None:
    with pytest.raises(TimingError, match=r"^The factor is a positive number, such as 1.5; got 0.$"):
        Timing("a", (1.0,)).assert_not_slower_than(Timing("b", (1.0,)), factor=0)
    with pytest.raises(TimingError, match="max_queries needs a database to count on: pass bind="):
        assert_completes_within(1, max_queries=3)
    with pytest.raises(TimingError, match=r"positive number of seconds, such as 0.2; got 0"):
        assert_completes_within(0)
    with pytest.raises(
        TimingError, match=r"^The budget is a positive number of seconds, such as 0.2; got -1.$"
    ):
        assert_runs_within(nothing, -1)
    with pytest.raises(TimingError, match="Unknown statistic 'mean'"):
        assert_runs_within(nothing, 1, statistic="mean")  # type: ignore[call-overload]
    with pytest.raises(TimingError, match="needs repeat >= 1 and warmup >= 0, got repeat=0 and warmup=1"):
        measure(nothing, repeat=0)
    with pytest.raises(
        TimingError,
        match=r"^The max_time is a positive number of seconds, such as 5, or None for the default; got 0.$",
    ):
        assert_runs_within(nothing, 1, max_time=0)
    with pytest.raises(TimingError, match=r"The max_time is a positive number of seconds.*; got nan"):
        assert_not_slower_than(nothing, nothing, max_time=math.nan)
    for statistic in ("min", "max"):
        with pytest.raises(TimingError) as raised:
            assert_not_slower_than(nothing, nothing, statistic=statistic)
        assert str(raised.value) == (
            f"assert_not_slower_than judges the ratio of each pair, and statistic={statistic!r} would let a "
            "single pair, slowed on one side by load, decide. Use 'median' or 'p95'; to compare the fastest "
            f"runs, measure both: measure(fn).assert_not_slower_than(measure(baseline), statistic={statistic!r})."
        )
