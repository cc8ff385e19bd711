"""Timing budgets that hold on noisy machines.

    async with assert_completes_within(5.0, max_queries=10):      # one run of a block
        await client.post("/api/import/csv", files=...)

    timing = await measure(lambda: client.get("/api/campaigns"))   # warm-up + 5 samples
    timing.assert_within(0.2)                                      # their median

    await assert_not_slower_than(lambda: client.get("/api/campaigns"),  # interleaved with a
                                 lambda: client.get("/health"), factor=3)  # baseline of this run

Every figure comes from the real `perf_counter`, held where no time mock reaches (freezegun would
otherwise make a frozen block take 0 s). Budgets are multiplied by $HARNESS_TIMING_SLACK (default 1)
so a slow CI machine can be given room without editing tests. A failure shows every sample.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import statistics
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from harness._realtime import RealClock
from harness.db import current_session
from harness.exceptions import TimingError
from harness.queries import Bind, QueryLog, capture_queries

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Timing", "assert_completes_within", "assert_not_slower_than", "measure"]

SLACK_VARIABLE = "HARNESS_TIMING_SLACK"
Statistic = Literal["median", "p95", "min", "max"]
_QUERIES_SHOWN = 20


def slack() -> float:
    """The factor every budget is multiplied by: $HARNESS_TIMING_SLACK, 1 when unset."""
    raw = os.environ.get(SLACK_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 1:  # also refuses nan
        msg = f"${SLACK_VARIABLE} must be a number of at least 1, such as 2 or 1.5; it is {raw!r}."
        raise TimingError(msg)
    return value


def _format(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _label(fn: Callable[..., Any]) -> str:
    name = (getattr(fn, "__qualname__", None) or repr(fn)).rpartition("<locals>.")[2]
    code = getattr(fn, "__code__", None)
    if name.endswith("<lambda>") and code is not None:
        return f"lambda at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return name


@dataclass(frozen=True)
class Timing:
    """Samples of one piece of code, in seconds, and the statistics budgets are checked against."""

    label: str
    samples: tuple[float, ...]
    warmup: tuple[float, ...] = ()
    queries: QueryLog | None = field(default=None, compare=False)

    @property
    def median(self) -> float:
        """The middle sample: the default statistic, robust to a few slow outliers."""
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        """The 95th percentile of the samples (interpolated; the slowest sample below 2 samples)."""
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=20, method="inclusive")[18]

    @property
    def min(self) -> float:
        """The fastest sample: the best estimate of the cost without noise."""
        return min(self.samples)

    @property
    def max(self) -> float:
        """The slowest sample."""
        return max(self.samples)

    def statistic(self, name: Statistic) -> float:
        """One of median, p95, min, max by name."""
        if name not in ("median", "p95", "min", "max"):
            msg = f"Unknown statistic {name!r}; choose median, p95, min or max."
            raise TimingError(msg)
        return float(getattr(self, name))

    def describe(self) -> str:
        """The whole distribution, as failure messages show it."""
        samples = " ".join(_format(s) for s in sorted(self.samples))
        lines = [
            f"  samples (sorted): {samples}",
            f"  min {_format(self.min)} · median {_format(self.median)} · p95 {_format(self.p95)} · "
            f"max {_format(self.max)} over {len(self.samples)} sample(s)",
        ]
        if self.warmup:
            lines.append(f"  warm-up (not counted): {' '.join(_format(s) for s in self.warmup)}")
        return "\n".join(lines)

    def assert_within(self, budget: float, *, statistic: Statistic = "median") -> None:
        """Fail unless the statistic of the samples is within `budget` seconds (times the slack)."""
        __tracebackhide__ = True
        allowed, value = budget * slack(), self.statistic(statistic)
        if value > allowed:
            msg = (
                f"{self.label} took {_format(value)} ({statistic} of {len(self.samples)}), over its budget of "
                f"{_format(allowed)}{_slack_note(budget)}.\n{self.describe()}{_queries_note(self.queries)}\n"
                f"{_ADVICE}"
            )
            raise AssertionError(msg)

    def assert_not_slower_than(
        self, baseline: Timing, *, factor: float = 1.5, statistic: Statistic = "median"
    ) -> None:
        """Fail if this is more than `factor` (times the slack) slower than `baseline`."""
        __tracebackhide__ = True
        if factor <= 0:
            msg = f"factor must be positive, such as 1.5; got {factor!r}."
            raise TimingError(msg)
        allowed = factor * slack()
        mine, theirs = self.statistic(statistic), baseline.statistic(statistic)
        ratio = mine / theirs if theirs > 0 else float("inf")
        if ratio > allowed:
            msg = (
                f"{self.label} took {_format(mine)} ({statistic}), {ratio:.2f}x the baseline {baseline.label} "
                f"({_format(theirs)}); allowed {allowed:g}x{_slack_note(factor, unit='x')}.\n"
                f"{self.label}:\n{self.describe()}\n{baseline.label} (baseline):\n{baseline.describe()}"
            )
            raise AssertionError(msg)


_ADVICE = (
    f"On a slower machine (CI), raise ${SLACK_VARIABLE}: every budget is multiplied by it. "
    "Budgets relative to a baseline measured in the same run (assert_not_slower_than) travel between machines."
)


def _slack_note(budget: float, unit: str = "") -> str:
    factor = slack()
    if factor == 1:
        return ""
    shown = f"{budget:g}{unit}" if unit else _format(budget)
    return f" ({shown} times ${SLACK_VARIABLE}={factor:g})"


def _queries_note(log: QueryLog | None) -> str:
    if log is None:
        return ""
    shown = "\n".join(f"  {n}. {q}" for n, q in enumerate(log.queries[:_QUERIES_SHOWN], 1))
    more = f"\n  … and {log.count - _QUERIES_SHOWN} more" if log.count > _QUERIES_SHOWN else ""
    return f"\n  queries ({log.count}):\n{shown}{more}" if log.count else "\n  queries: none"


def _check_counts(repeat: int, warmup: int) -> None:
    if repeat < 1 or warmup < 0:
        msg = f"measure() needs repeat >= 1 and warmup >= 0, got repeat={repeat} and warmup={warmup}."
        raise TimingError(msg)


def _note_failure(error: BaseException, label: str, run: int, warmup: int, repeat: int) -> None:
    what = f"warm-up run {run + 1} of {warmup}" if run < warmup else f"sample {run - warmup + 1} of {repeat}"
    error.add_note(f"harness.timing: {label} raised during {what}; no budget was checked.")


def _refuse_mix(awaitable: object, labels: list[str]) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never awaited on purpose: no "never awaited" warning
    msg = (
        f"{' and '.join(labels)} must be both sync or both async (returning awaitables): "
        "timing one against the other compares different things."
    )
    raise TimingError(msg)


# -- measuring functions ----------------------------------------------------------------------


@overload
def measure(
    fn: Callable[[], Awaitable[Any]], *, repeat: int = 5, warmup: int = 1, label: str | None = None
) -> Coroutine[Any, Any, Timing]: ...
@overload
def measure(
    fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, label: str | None = None
) -> Timing: ...
def measure(
    fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, label: str | None = None
) -> Timing | Coroutine[Any, Any, Timing]:
    """Call `fn` `warmup` times, then `repeat` times timed; await the result if `fn` is async.

    `timing = measure(parse)` for sync code, `timing = await measure(lambda: client.get("/"))` for
    async code (a function returning an awaitable).
    """
    _check_counts(repeat, warmup)
    return _interleaved([fn], repeat, warmup, [label or _label(fn)], lambda timings: timings[0])  # type: ignore[no-any-return]


def _interleaved(
    fns: list[Callable[[], Any]],
    repeat: int,
    warmup: int,
    labels: list[str],
    finish: Callable[[list[Timing]], Any],
) -> Any:
    """Time `fns` in rounds (A B, B A, ...) so drift and noise fall on all of them alike."""
    runs: list[list[float]] = [[] for _ in fns]
    clock = RealClock.perf_counter
    order = list(range(len(fns)))

    def timings() -> list[Timing]:
        return [
            Timing(label, tuple(r[warmup:]), tuple(r[:warmup])) for label, r in zip(labels, runs, strict=True)
        ]

    def schedule() -> list[int]:  # indexes in timing order, the first call already made
        rounds = [order if run % 2 == 0 else order[::-1] for run in range(warmup + repeat)]
        return [index for run in rounds for index in run][1:]

    def record(index: int, start: float) -> None:
        runs[index].append(clock() - start)

    def failed(error: BaseException, index: int) -> None:
        _note_failure(error, labels[index], len(runs[index]), warmup, repeat)

    start = clock()
    try:
        first = fns[0]()
    except BaseException as error:
        failed(error, 0)
        raise
    if not inspect.isawaitable(first):
        record(0, start)
        for index in schedule():
            start = clock()
            try:
                result = fns[index]()
            except BaseException as error:
                failed(error, index)
                raise
            record(index, start)
            if inspect.isawaitable(result):
                _refuse_mix(result, labels)
        return finish(timings())

    async def measure_async() -> Any:
        try:
            await first
        except BaseException as error:
            failed(error, 0)
            raise
        record(0, start)
        for index in schedule():
            begun = clock()
            result = fns[index]()
            if not inspect.isawaitable(result):
                _refuse_mix(None, labels)
            try:
                await result
            except BaseException as error:
                failed(error, index)
                raise
            record(index, begun)
        return finish(timings())

    return measure_async()


@overload
def assert_not_slower_than(
    fn: Callable[[], Awaitable[Any]],
    baseline: Callable[[], Awaitable[Any]],
    *,
    factor: float = 1.5,
    repeat: int = 7,
    warmup: int = 1,
    statistic: Statistic = "median",
) -> Coroutine[Any, Any, tuple[Timing, Timing]]: ...
@overload
def assert_not_slower_than(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    factor: float = 1.5,
    repeat: int = 7,
    warmup: int = 1,
    statistic: Statistic = "median",
) -> tuple[Timing, Timing]: ...
def assert_not_slower_than(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    factor: float = 1.5,
    repeat: int = 7,
    warmup: int = 1,
    statistic: Statistic = "median",
) -> tuple[Timing, Timing] | Coroutine[Any, Any, tuple[Timing, Timing]]:
    """Fail if `fn` is more than `factor` times slower than `baseline`, both measured here, interleaved.

    A budget relative to code timed in the same run on the same machine holds on fast laptops and
    slow CI runners alike. Returns (fn's Timing, baseline's Timing); await it for async functions.
    """
    _check_counts(repeat, warmup)

    def check(timings: list[Timing]) -> tuple[Timing, Timing]:
        __tracebackhide__ = True
        baseline_timing, timing = timings
        timing.assert_not_slower_than(baseline_timing, factor=factor, statistic=statistic)
        return timing, baseline_timing

    return _interleaved([baseline, fn], repeat, warmup, [_label(baseline), _label(fn)], check)  # type: ignore[no-any-return]


# -- budgets on a block ------------------------------------------------------------------------


class assert_completes_within:  # used like a function: `with assert_completes_within(0.2):`
    """Fail if the block takes longer than `budget` seconds (times the slack), or runs too many queries.

    A sync and async context manager; one run of the block is one sample, so keep it for budgets
    with room (the seed's "5,000 rows in under 5 s"). With `max_queries`, the queries run through
    `bind` (default: the current test's session) are counted too, and one failure shows both.
    An exception from the block passes through untouched: no budget is checked then.
    """

    def __init__(self, budget: float, *, max_queries: int | None = None, bind: Bind | None = None) -> None:
        if not budget > 0:
            msg = f"The budget is a positive number of seconds, such as 0.2; got {budget!r}."
            raise TimingError(msg)
        if max_queries is not None and bind is None:
            bind = current_session()
            if bind is None:
                msg = (
                    "max_queries needs a database to count on: pass bind=<session or engine>, "
                    "or use it inside a rollback scope (the db_session fixture)."
                )
                raise TimingError(msg)
        self.budget, self.max_queries, self._bind = budget, max_queries, bind
        self.timing: Timing | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> assert_completes_within:
        self._queries = (
            self._stack.enter_context(capture_queries(self._bind)) if self._bind is not None else None
        )
        self._start = RealClock.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        elapsed = RealClock.perf_counter() - self._start
        self._stack.close()
        if exc is not None:
            exc.add_note(
                f"harness.timing: the timed block raised after {_format(elapsed)}; no budget was checked."
            )
            return
        self.timing = Timing("the block", (elapsed,), queries=self._queries)
        too_many = (
            self.max_queries is not None
            and self._queries is not None
            and self._queries.count > self.max_queries
        )
        allowed = self.budget * slack()
        if elapsed <= allowed and not too_many:
            return
        problems = []
        if elapsed > allowed:
            problems.append(
                f"took {_format(elapsed)}, over its budget of {_format(allowed)}{_slack_note(self.budget)}"
            )
        if too_many:
            problems.append(f"ran {self._queries.count} queries, over its budget of {self.max_queries}")  # type: ignore[union-attr]
        msg = f"The block {' and '.join(problems)}.{_queries_note(self._queries)}\n{_ADVICE}"
        raise AssertionError(msg)

    async def __aenter__(self) -> assert_completes_within:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self.__exit__(exc_type, exc, tb)
