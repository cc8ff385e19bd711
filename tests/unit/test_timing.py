"""harness.timing: measurements on a clock no time mock reaches, and budgets whose failures show the samples.

Pass/fail cases use margins no machine closes (a 30 ms sleep against a 1 ms budget, a no-op
against 10 s); exact messages come from Timing values built by hand.
"""

from __future__ import annotations

import asyncio
import time

import freezegun
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from harness import (
    Timing,
    TimingError,
    assert_completes_within,
    assert_not_slower_than,
    freeze_time,
    measure,
)


def nothing() -> None:
    pass


@pytest.fixture(autouse=True)
def no_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are pinned as written; a CI's $HARNESS_TIMING_SLACK would change them."""
    monkeypatch.delenv("HARNESS_TIMING_SLACK", raising=False)


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


def test_a_budget_failure_shows_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_TIMING_SLACK", raising=False)
    timing = Timing("import_contacts", (0.7, 0.5, 0.6), warmup=(0.9,))
    timing.assert_within(0.7)
    with pytest.raises(AssertionError) as raised:
        timing.assert_within(0.2)
    assert str(raised.value) == (
        "import_contacts took 600.0 ms (median of 3), over its budget of 200.0 ms.\n"
        "  samples (sorted): 500.0 ms 600.0 ms 700.0 ms\n"
        "  min 500.0 ms · median 600.0 ms · p95 690.0 ms · max 700.0 ms over 3 sample(s)\n"
        "  warm-up (not counted): 900.0 ms\n"
        "On a slower machine (CI), raise $HARNESS_TIMING_SLACK: every budget is multiplied by it. "
        "Budgets relative to a baseline measured in the same run (assert_not_slower_than) travel between machines."
    )
    with pytest.raises(AssertionError, match=r"took 690.0 ms \(p95 of 3\)"):
        timing.assert_within(0.65, statistic="p95")


def test_the_slack_variable_multiplies_every_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = Timing("report", (0.5, 0.6, 0.7))
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "4")
    timing.assert_within(0.2)
    timing.assert_not_slower_than(Timing("baseline", (0.1,)), factor=1.5)
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "2")
    with pytest.raises(
        AssertionError, match=r"over its budget of 400.0 ms \(200.0 ms times \$HARNESS_TIMING_SLACK=2\)"
    ):
        timing.assert_within(0.2)
    monkeypatch.setenv("HARNESS_TIMING_SLACK", "fast")
    with pytest.raises(TimingError) as raised:
        timing.assert_within(0.2)
    assert (
        str(raised.value)
        == "$HARNESS_TIMING_SLACK must be a number of at least 1, such as 2 or 1.5; it is 'fast'."
    )


def test_a_relative_failure_shows_both_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_TIMING_SLACK", raising=False)
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
    candidate, baseline = assert_not_slower_than(
        lambda: order.append("fn"), lambda: order.append("base"), factor=1000, repeat=3, warmup=1
    )
    assert order == ["base", "fn", "fn", "base", "base", "fn", "fn", "base"]
    assert (len(candidate.samples), len(baseline.samples)) == (3, 3)


def test_assert_not_slower_than_fails_a_slow_function() -> None:
    with pytest.raises(AssertionError, match=r"lambda at test_timing.py:\d+ took .*x the baseline nothing"):
        assert_not_slower_than(lambda: time.sleep(0.03), nothing, factor=1.5, repeat=3)


async def test_assert_not_slower_than_async() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    await assert_not_slower_than(quick, quick, factor=1000)
    with pytest.raises(AssertionError, match="x the baseline"):
        await assert_not_slower_than(lambda: asyncio.sleep(0.03), quick, factor=1.5, repeat=3)


async def test_a_block_within_budget_passes_and_over_budget_fails() -> None:
    async with assert_completes_within(10) as block:
        await asyncio.sleep(0)
    assert block.timing is not None
    with pytest.raises(AssertionError) as raised:
        async with assert_completes_within(0.001):
            await asyncio.sleep(0.03)
    assert str(raised.value).startswith("The block took ")
    assert ", over its budget of 1.0 ms.\nOn a slower machine (CI), raise $HARNESS_TIMING_SLACK" in str(
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
    assert raised.value.__notes__ == [
        "harness.timing: flaky raised during sample 3 of 5; no budget was checked."
    ]


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
    with pytest.raises(
        AssertionError, match=r"^The block took .* over its budget of 1.0 ms and ran 3 queries"
    ):
        async with assert_completes_within(0.001, max_queries=2):
            for n in range(3):
                await db_session.execute(select(n))
            await asyncio.sleep(0.03)


def test_misuse_is_refused() -> None:
    with pytest.raises(TimingError, match=r"^factor must be positive, such as 1.5; got 0.$"):
        Timing("a", (1.0,)).assert_not_slower_than(Timing("b", (1.0,)), factor=0)
    with pytest.raises(TimingError, match="max_queries needs a database to count on: pass bind="):
        assert_completes_within(1, max_queries=3)
    with pytest.raises(TimingError, match=r"positive number of seconds, such as 0.2; got 0"):
        assert_completes_within(0)
    with pytest.raises(TimingError, match="needs repeat >= 1 and warmup >= 0, got repeat=0 and warmup=1"):
        measure(nothing, repeat=0)
