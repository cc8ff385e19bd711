"""Timing budgets that hold on busy machines.

    async with assert_completes_within(5.0, max_queries=10):      # one run of a block
        await client.post("/api/import/csv", files=...)

    await assert_runs_within(lambda: client.get("/api/campaigns"), 0.2)  # sampled until it can tell

    await assert_not_slower_than(lambda: client.get("/api/campaigns?limit=50"),  # interleaved with a
                                 lambda: client.get("/api/campaigns?limit=1"),   # baseline doing the
                                 factor=3)                                       # same kind of work

Load on the machine only ever adds time, and it comes and goes. So the assertions keep sampling
until the evidence is clear either way (a budget with room passes after 7 samples, a broken one
fails after 17) and fail only when the budget is exceeded with confidence. Absolute budgets
are scaled by how much slower this machine is, at that moment, than the reference machine: a
reference workload is timed next to each sample once the first samples come close to the budget.
When the machine is too noisy to tell before the time cap, the outcome says so: a pass with a
`TimingUndecidedWarning` (default), or a failure with `$HARNESS_TIMING_UNDECIDED=fail`.

Every figure comes from the real `perf_counter`, held where no time mock reaches (freezegun would
otherwise make a frozen block take 0 s). Budgets are multiplied by $HARNESS_TIMING_SLACK (default 1)
so a machine can be given room without editing tests. A failure shows every sample.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import statistics
import sys
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from harness._realtime import RealClock
from harness.db import current_session
from harness.exceptions import TimingError, TimingUndecidedWarning, TimingWarning
from harness.queries import Bind, QueryLog, capture_queries

if TYPE_CHECKING:
    from types import FrameType, TracebackType

__all__ = [
    "Calibration",
    "Timing",
    "assert_completes_within",
    "assert_not_slower_than",
    "assert_runs_within",
    "calibrate",
    "measure",
]

SLACK_VARIABLE = "HARNESS_TIMING_SLACK"
UNDECIDED_VARIABLE = "HARNESS_TIMING_UNDECIDED"
Statistic = Literal["median", "p95", "min", "max"]
Undecided = Literal["pass", "fail"]
_QUERIES_SHOWN = 20

# The sequential decision. A look "over" is wrong at most _ALPHA_OVER of the time when the budget
# holds, a look "within" at most _ALPHA_WITHIN when it does not; looks come after every sample
# from the _FIRST_LOOK-th on, until the caps.
_QUANTILE = {"median": 0.5, "p95": 0.95}
_ALPHA_OVER = 1e-3
_ALPHA_WITHIN = 1e-2
_FIRST_LOOK = 7  # all within: the median is within with 99% confidence (0.5**7 < 0.01)
# Samples before the time cap may end sampling: all over the budget must be able to fail it first,
# or a short max_time would turn a clear slowdown into an undecided pass (0.5**10 < _ALPHA_OVER).
_LEAST_BEFORE_CAP = {"median": 10, "p95": _FIRST_LOOK, "min": _FIRST_LOOK, "max": _FIRST_LOOK}
_MAX_SAMPLES = 1000
_TIME_CAP = 2.0  # seconds of sampling at least, before an undecided outcome …
_TIME_CAP_ROUNDS = 25  # … or this many times the first samples' time, for slow code
_RECHECK_RUNS = 3  # reference runs that re-check a start-up calibration before it gives room

# The reference workload: pure-Python CPU work. REFERENCE_SECONDS is what it takes on the reference
# machine (the AMD EPYC server core harness's figures come from, Python 3.11); a slower machine
# gets proportionally more room, a faster one none.
REFERENCE_SECONDS = 0.79e-3
_REFERENCE_LOOP = 20_000


def _reference_work() -> None:
    total = 0
    for i in range(_REFERENCE_LOOP):
        total += i * i


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


def _undecided_policy(given: Undecided | None) -> Undecided:
    value = given if given is not None else (os.environ.get(UNDECIDED_VARIABLE, "").strip() or "pass")
    if value not in ("pass", "fail"):
        msg = f"What an undecided timing does is 'pass' or 'fail' (${UNDECIDED_VARIABLE}); got {value!r}."
        raise TimingError(msg)
    return value  # type: ignore[return-value]


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


# -- the machine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """How much slower this machine is than the reference machine that absolute budgets assume."""

    reference: float
    """Seconds the reference workload takes here (the fastest of its runs)."""

    @property
    def factor(self) -> float:
        """What absolute budgets are multiplied by: `reference` over the reference machine's, at least 1."""
        return max(1.0, self.reference / REFERENCE_SECONDS)

    def describe(self) -> str:
        """One line for failure messages."""
        return (
            f"this machine runs the reference workload in {_format(self.reference)} "
            f"({_format(REFERENCE_SECONDS)} on the reference machine): budgets scaled x{self.factor:.2f}"
        )


def calibrate(runs: int = 9) -> Calibration:
    """Time the reference workload now (the fastest of `runs`): this machine's speed, load excluded."""
    clock = RealClock.perf_counter
    times = []
    for _ in range(runs):
        start = clock()
        _reference_work()
        times.append(clock() - start)
    return Calibration(min(times))


_machine: Calibration | None = None


def machine() -> Calibration:
    """The run's calibration, measured at its first use and kept for the process."""
    global _machine
    if _machine is None:
        _machine = calibrate()
    return _machine


# -- samples ----------------------------------------------------------------------------------


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
        _check_statistic(name)
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
        """Fail unless the statistic of these samples is within `budget` seconds, scaled to this machine.

        Checks the samples as measured; `assert_runs_within(fn, budget)` samples until it can tell.
        """
        __tracebackhide__ = True
        _check_positive(budget, "budget", "a positive number of seconds, such as 0.2")
        value = self.statistic(statistic)
        calibration = machine()
        if value > budget * slack() * calibration.factor:
            calibration = max(calibration, calibrate(), key=lambda c: c.factor)  # re-checked when close
        allowed = budget * slack() * calibration.factor
        if value > allowed:
            msg = (
                f"{self.label} took {_format(value)} ({statistic} of {len(self.samples)}), over its budget of "
                f"{_format(allowed)}{_scaled_note(budget, calibration)}.\n{self.describe()}"
                f"{_queries_note(self.queries)}\n{_ADVICE}"
            )
            raise AssertionError(msg)

    def assert_not_slower_than(
        self, baseline: Timing, *, factor: float = 1.5, statistic: Statistic = "median"
    ) -> None:
        """Fail if the statistic of these samples is more than `factor` (times the slack) that of `baseline`."""
        __tracebackhide__ = True
        _check_positive(factor, "factor", "a positive number, such as 1.5")
        allowed = factor * slack()
        mine, theirs = self.statistic(statistic), baseline.statistic(statistic)
        ratio = mine / theirs if theirs > 0 else math.inf
        if ratio > allowed:
            msg = (
                f"{self.label} took {_format(mine)} ({statistic}), {ratio:.2f}x the baseline {baseline.label} "
                f"({_format(theirs)}); allowed {allowed:g}x{_slack_note(factor, unit='x')}.\n"
                f"{self.label}:\n{self.describe()}\n{baseline.label} (baseline):\n{baseline.describe()}\n"
                f"{_ADVICE}"
            )
            raise AssertionError(msg)


_ADVICE = (
    f"If this machine is slower or busier than budgets allow, set ${SLACK_VARIABLE} (a factor every "
    "budget is multiplied by) rather than loosening the test."
)


def _slack_note(budget: float, unit: str = "") -> str:
    factor = slack()
    if factor == 1:
        return ""
    shown = f"{budget:g}{unit}" if unit else _format(budget)
    return f" ({shown} times ${SLACK_VARIABLE}={factor:g})"


def _scaled_note(budget: float, calibration: Calibration) -> str:
    parts = [f"x{calibration.factor:.2f} for this machine"] if calibration.factor > 1 else []
    if slack() != 1:
        parts.append(f"x${SLACK_VARIABLE}={slack():g}")
    return f" ({_format(budget)} {' '.join(parts)})" if parts else ""


def _queries_note(log: QueryLog | None) -> str:
    if log is None:
        return ""
    shown = "\n".join(f"  {n}. {q}" for n, q in enumerate(log.queries[:_QUERIES_SHOWN], 1))
    more = f"\n  … and {log.count - _QUERIES_SHOWN} more" if log.count > _QUERIES_SHOWN else ""
    return f"\n  queries ({log.count}):\n{shown}{more}" if log.count else "\n  queries: none"


def _check_max_time(max_time: float | None) -> None:
    if max_time is not None:
        _check_positive(
            max_time, "max_time", "a positive number of seconds, such as 5, or None for the default"
        )


def _check_statistic(name: str) -> None:
    if name not in ("median", "p95", "min", "max"):
        msg = f"Unknown statistic {name!r}; choose median, p95, min or max."
        raise TimingError(msg)


def _check_positive(value: float, name: str, example: str) -> None:
    if not value > 0:  # also refuses nan
        msg = f"The {name} is {example}; got {value!r}."
        raise TimingError(msg)


def _check_counts(repeat: int, warmup: int) -> None:
    if repeat < 1 or warmup < 0:
        msg = f"measure() needs repeat >= 1 and warmup >= 0, got repeat={repeat} and warmup={warmup}."
        raise TimingError(msg)


# -- the sequential decision ------------------------------------------------------------------

Verdict = Literal["within", "over", "undecided"]


def _at_least(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q)."""
    return sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1))


def _look(values: Sequence[float], limit: float, statistic: Statistic) -> Verdict | None:
    """Within or over `limit` with confidence, or None: sample more.

    Distribution-free: if the statistic (a quantile) were exactly at the limit, each value would be
    above it with probability q; a count of values above it that is too unlikely under that says
    which side the statistic is on.
    """
    n, above = len(values), sum(value > limit for value in values)
    if statistic == "min":  # load only adds time: one value within is proof, all over is evidence
        return "within" if above < n else None
    if statistic == "max":
        return "over" if above else None
    q = 1 - _QUANTILE[statistic]
    if _at_least(above, n, q) <= _ALPHA_OVER:
        return "over"
    if 1 - _at_least(above + 1, n, q) <= _ALPHA_WITHIN:
        return "within"
    return None


def _at_cap(values: Sequence[float], limit: float, statistic: Statistic) -> Verdict:
    if statistic == "min":
        return "over"  # not one value within the limit, over the whole time cap
    if statistic == "max":
        return "within"
    return "undecided"


@dataclass
class _Evidence:
    """What a sequential measurement saw, and what it decided."""

    verdict: Verdict
    samples: list[float]
    warmup: list[float]
    limit: float
    statistic: Statistic
    adjusted: list[float] = field(default_factory=list)  # as on a quiet reference machine (or ratios)
    moments: list[tuple[float, float]] = field(default_factory=list)  # (speed, load) at each sample
    baseline: list[float] = field(default_factory=list)
    cpu_share: tuple[float, float] | None = (
        None  # (fn, baseline): most CPU over (wall - queued) time of a call
    )

    @property
    def decided_on(self) -> list[float]:
        return self.adjusted or self.samples


# A plan is a generator: it yields which function to time next (_FN, _BASELINE or _REFERENCE),
# receives (wall seconds, CPU seconds, seconds queued for a core), and returns its _Evidence.
# Runners drive it, sync or async.
_FN, _BASELINE, _REFERENCE = 0, 1, 2
Elapsed = tuple[float, float, float]
Plan = Generator[int, Elapsed, _Evidence]


def _absolute_plan(
    limit: float, statistic: Statistic, warmup: int, startup: Calibration, max_time: float | None
) -> Plan:
    warm: list[float] = []
    for _ in range(warmup):
        warm.append((yield _FN)[0])
    seen: list[Elapsed] = []
    for _ in range(_FIRST_LOOK):
        seen.append((yield _FN))
    first = [sample[0] for sample in seen]

    def within_at(speed: float) -> bool:
        # The machine's speed gives room to computing only: a slow machine does not wait longer on
        # a server or a sleep. Time queued for a core is load, taken out where it is known.
        judged = [_as_on_reference(sample, speed, load=1.0) for sample in seen]
        return _look(judged, limit, statistic) == "within"

    if within_at(startup.factor):  # room to spare, load and all
        # Room from the start-up calibration would hide a slowdown if the machine was busier then
        # than now: re-time the reference workload, and judge again at the speed it shows now.
        now = startup.factor
        for _ in range(_RECHECK_RUNS if startup.factor > 1 else 0):
            now = min(now, _moment((yield _REFERENCE))[0])
        if now == startup.factor or within_at(now):
            return _Evidence("within", first, warm, limit, statistic)
    # Close or over: time the reference workload next to each sample, and judge each sample as
    # it would have run on a quiet reference machine, so that load is not taken for slowness.
    cap = max_time if max_time is not None else max(_TIME_CAP, _TIME_CAP_ROUNDS * sum(first))
    spent = sum(warm) + sum(first)
    samples: list[float] = []
    adjusted: list[float] = []
    moments: list[tuple[float, float]] = []
    verdict: Verdict | None = None
    while verdict is None:
        if len(samples) % 2:
            sample, reference = (yield _FN), (yield _REFERENCE)
        else:
            reference, sample = (yield _REFERENCE), (yield _FN)
        speed, load = _moment(reference)
        samples.append(sample[0])
        moments.append((speed, load))
        adjusted.append(_as_on_reference(sample, speed, load))
        spent += sample[0] + reference[0]
        if len(samples) >= _FIRST_LOOK:
            verdict = _look(adjusted, limit, statistic)
        capped = spent >= cap and len(samples) >= _LEAST_BEFORE_CAP[statistic]
        if verdict is None and (capped or len(samples) >= _MAX_SAMPLES):
            verdict = _at_cap(adjusted, limit, statistic)
    return _Evidence(verdict, first + samples, warm, limit, statistic, adjusted, moments)


def _moment(reference: Elapsed) -> tuple[float, float]:
    """This machine's speed (CPU seconds over the reference machine's, at least 1) and its load (wall
    seconds over CPU seconds: 2 when the process got half a core), from one reference run."""
    wall, cpu, _ = reference
    return max(1.0, cpu / REFERENCE_SECONDS), max(1.0, wall / cpu) if cpu > 0 else 1.0


def _as_on_reference(sample: Elapsed, speed: float, load: float) -> float:
    """A sample's time on a quiet reference machine: its computing (CPU seconds) and the time it
    queued for a core are taken out, and the computing put back at the reference machine's speed;
    its waiting (on a database server, the network, a sleep) is kept as measured, since load on this
    machine does not stretch it. Where the system does not report queueing, the reference
    workload's load stands in for it (less exact: a short run is preempted less often)."""
    wall, cpu, queued = sample
    waiting = max(0.0, wall - queued - cpu) if _QUEUEING_KNOWN else max(0.0, wall - cpu * load)
    return waiting + min(wall, cpu) / speed


def _relative_plan(limit: float, statistic: Statistic, warmup: int, max_time: float | None) -> Plan:
    # The share of each call's time, less the time it queued for a core (load), spent computing in
    # this process: the most any call showed is the function's own, and it tells computing from
    # waiting on something else (a database server, the network, a sleep).
    shares: list[list[float]] = [[], []]

    def pair(flip: bool) -> Generator[int, Elapsed, tuple[float, float]]:
        order = (_FN, _BASELINE) if flip else (_BASELINE, _FN)
        times: dict[int, float] = {}
        for index in order:
            times[index], cpu_seconds, queued = yield index
            running = times[index] - queued  # time on a core or waiting on something else
            share = cpu_seconds / running if running > 0 else 1.0
            shares[index].append(min(1.0, share))
        return times[_FN], times[_BASELINE]

    warm: list[float] = []
    for n in range(warmup):
        warm.append((yield from pair(bool(n % 2)))[0])  # rounds alternate A B, B A, … throughout
    samples: list[float] = []
    baseline: list[float] = []
    ratios: list[float] = []
    cap, spent = math.inf, 0.0
    verdict: Verdict | None = None
    while verdict is None:
        sample, base = yield from pair(bool((warmup + len(samples)) % 2))
        samples.append(sample)
        baseline.append(base)
        ratios.append(sample / base if base > 0 else math.inf)
        spent += sample + base
        if len(samples) == 1:
            cap = max_time if max_time is not None else max(_TIME_CAP, _TIME_CAP_ROUNDS * _FIRST_LOOK * spent)
        if len(samples) >= _FIRST_LOOK:
            verdict = _look(ratios, limit, statistic)
        capped = spent >= cap and len(samples) >= _LEAST_BEFORE_CAP[statistic]
        if verdict is None and (capped or len(samples) >= _MAX_SAMPLES):
            verdict = _at_cap(ratios, limit, statistic)
    share = (max(shares[_FN]), max(shares[_BASELINE]))
    return _Evidence(verdict, samples, warm, limit, statistic, ratios, baseline=baseline, cpu_share=share)


def _fixed_plan(
    warmup: int, repeat: int, indexes: Sequence[int]
) -> Generator[int, Elapsed, list[list[float]]]:
    """Time each of `indexes` in rounds (A B, B A, ...) so that drift falls on all of them alike."""
    runs: list[list[float]] = [[] for _ in indexes]
    for round_ in range(warmup + repeat):
        order = range(len(indexes)) if round_ % 2 == 0 else reversed(range(len(indexes)))
        for position in order:
            runs[position].append((yield indexes[position])[0])
    return runs


# -- running a plan, sync or async --------------------------------------------------------------

R = Any


def _drive(
    plan: Generator[int, Elapsed, R],
    fns: dict[int, Callable[[], Any]],
    labels: dict[int, str],
    warmup: int,
    finish: Callable[[R], Any],
) -> Any:
    """Call what `plan` asks for, timed; await the calls if the functions are async.

    The first call tells sync from async; a reference workload (sync) may run between async calls.
    """
    wall, cpu = RealClock.perf_counter, RealClock.process_time
    calls = dict.fromkeys(fns, 0)

    # Linux charges a preemption to the queueing count when the thread gets a core back, and on
    # this machine it often comes at a system call: reading the count itself. Reads outside the
    # call (as here) take the queueing of its neighbours, so the time they took is taken back
    # out: the call is credited at most the queueing it can have had (once, 28 ms of a read's
    # queueing made a 4 ms sleep look like 61 µs).
    def stamp() -> Elapsed:
        before = wall()
        queued = _queued()
        started = wall()
        return started, cpu(), queued + (started - before)

    def since(stamped: Elapsed) -> Elapsed:
        started, cpu_started, queued_started = stamped
        ended = wall()
        cpu_now, queued = cpu(), _queued()
        elapsed = ended - started
        queued -= wall() - ended
        # Other threads' queueing adds up beside this one's: never more than the call took.
        return elapsed, cpu_now - cpu_started, min(elapsed, max(0.0, queued - queued_started))

    def failed(error: BaseException, index: int) -> None:
        run = calls[index]
        what = f"warm-up run {run + 1}" if run < warmup else f"sample {run - warmup + 1}"
        error.add_note(f"harness.timing: {labels[index]} raised during {what}; no budget was checked.")

    index = next(plan)
    stamped = stamp()
    try:
        first = fns[index]()
    except BaseException as error:
        failed(error, index)
        raise
    if not inspect.isawaitable(first):
        elapsed = since(stamped)
        while True:
            calls[index] += 1
            try:
                index = plan.send(elapsed)
            except StopIteration as stop:
                evidence = stop.value
                break
            stamped = stamp()
            try:
                result = fns[index]()
            except BaseException as error:
                failed(error, index)
                raise
            elapsed = since(stamped)
            if inspect.isawaitable(result):
                _refuse_mix(result, labels)
        return finish(evidence)

    async def drive_async() -> Any:
        nonlocal index, stamped
        try:
            await first
        except BaseException as error:
            failed(error, index)
            raise
        elapsed = since(stamped)
        while True:
            calls[index] += 1
            try:
                index = plan.send(elapsed)
            except StopIteration as stop:
                evidence = stop.value
                break
            stamped = stamp()
            try:
                result = fns[index]()
            except BaseException as error:
                failed(error, index)
                raise
            if index != _REFERENCE:
                if not inspect.isawaitable(result):
                    _refuse_mix(None, labels)
                try:
                    await result
                except BaseException as error:
                    failed(error, index)
                    raise
            elapsed = since(stamped)
        return finish(evidence)

    return drive_async()


_QUEUEING_KNOWN = os.path.exists("/proc/self/schedstat")


def _queued() -> float:
    """Seconds the process's threads have spent ready to run but waiting for a core, as Linux counts
    them (/proc schedstat); 0 where the system does not tell. Load shows here, waiting on I/O does not."""
    total = 0
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for thread in threads:
        try:
            with open(f"/proc/self/task/{thread}/schedstat", "rb") as stats:
                total += int(stats.read().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile, or no such figure
            continue
    return total / 1e9


def _refuse_mix(awaitable: object, labels: dict[int, str]) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never awaited on purpose: no "never awaited" warning
    names = [label for index, label in labels.items() if index != _REFERENCE]
    msg = (
        f"{' and '.join(names)} must be both sync or both async (returning awaitables): "
        "timing one against the other compares different things."
    )
    raise TimingError(msg)


# -- judging what a plan saw --------------------------------------------------------------------


def _counted(evidence: _Evidence) -> str:
    values = evidence.decided_on
    above = sum(value > evidence.limit for value in values)
    return f"{above} of {len(values)} over"


def _warn(warning: Warning) -> None:
    """Warn from the caller's line: the first frame outside this module."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


def _undecided(message: str, policy: Undecided) -> None:
    __tracebackhide__ = True
    message += (
        f"\nSet ${UNDECIDED_VARIABLE}=fail (or undecided='fail') to fail instead, or give the budget room."
        if policy == "pass"
        else f"\nSet ${UNDECIDED_VARIABLE}=pass (or undecided='pass') to pass with a warning instead.\n{_ADVICE}"
    )
    if policy == "fail":
        raise AssertionError(message)
    _warn(TimingUndecidedWarning(message))


def _judge_absolute(evidence: _Evidence, label: str, budget: float, policy: Undecided) -> None:
    __tracebackhide__ = True
    if evidence.verdict == "within":
        return
    timing = Timing(label, tuple(evidence.samples), tuple(evidence.warmup))
    scaled = Timing(label, tuple(evidence.decided_on))
    allowed = f"{_format(evidence.limit)}{_slack_note(budget)}"
    machine_line = ""
    if evidence.moments:
        speeds, loads = (sorted(values) for values in zip(*evidence.moments, strict=True))
        machine_line = (
            f"\n  as on a quiet reference machine (the reference workload timed next to each sample): this "
            f"machine computes x{statistics.median(speeds):.2f} slower, and its load stretched computing "
            f"x{statistics.median(loads):.2f} (median; x{loads[0]:.2f} to x{loads[-1]:.2f}); waiting is counted as measured"
            f"\n  adjusted (sorted): {' '.join(_format(value) for value in sorted(evidence.adjusted))}"
        )
    judged = "as on the reference machine" if evidence.moments else "as measured"
    seen = (
        f"the {evidence.statistic} of its samples, {judged}, is {_format(scaled.statistic(evidence.statistic))} "
        f"({_counted(evidence)} the budget)"
    )
    if evidence.verdict == "over":
        msg = (
            f"{label} is over its budget of {allowed}: {seen}.\n{timing.describe()}{machine_line}\n{_ADVICE}"
        )
        raise AssertionError(msg)
    _undecided(
        f"harness could not tell whether {label} is within its budget of {allowed}: the machine was too "
        f"noisy for {len(evidence.samples)} samples to decide ({seen}).\n{timing.describe()}{machine_line}",
        policy,
    )


def _judge_relative(evidence: _Evidence, labels: tuple[str, str], factor: float, policy: Undecided) -> None:
    __tracebackhide__ = True
    label, base_label = labels
    unlike = ""
    if (
        evidence.cpu_share is not None
        and abs(evidence.cpu_share[0] - evidence.cpu_share[1]) > _LIKE_WITH_LIKE
    ):
        mine, theirs = evidence.cpu_share
        unlike = (
            f"{label} spends at most {mine:.0%} of its time computing in this process and the baseline "
            f"{base_label} {theirs:.0%}: they do different kinds of work (one waits, on a database or the network), "
            "which load slows differently, so their ratio moves with the machine's load. Compare with a "
            "baseline that does the same kind of work."
        )
    if evidence.verdict == "within":
        if unlike:
            _warn(TimingWarning(unlike))
        return
    ratios = Timing("ratio", tuple(evidence.decided_on))
    value = ratios.statistic(evidence.statistic)
    seen = (
        f"the {evidence.statistic} of {len(evidence.decided_on)} paired ratios is {value:.2f}x "
        f"({_counted(evidence)} the allowed {evidence.limit:g}x{_slack_note(factor, unit='x')})"
    )
    shown = (
        f"{label}:\n{Timing(label, tuple(evidence.samples), tuple(evidence.warmup)).describe()}\n"
        f"{base_label} (baseline):\n{Timing(base_label, tuple(evidence.baseline)).describe()}\n"
        f"  ratios (sorted): {' '.join(f'{r:.2f}' for r in sorted(evidence.decided_on))}"
    )
    if evidence.verdict == "over":
        # A regression that adds waiting (a query per row, say) changes the kind of work too: the
        # note goes with the failure, not in a warning that would hide it.
        note = f"\nNote: {unlike}" if unlike else ""
        msg = f"{label} is slower than {evidence.limit:g}x the baseline {base_label}: {seen}.\n{shown}{note}\n{_ADVICE}"
        raise AssertionError(msg)
    _undecided(
        f"harness could not tell whether {label} is within {evidence.limit:g}x the baseline {base_label}: the "
        f"machine was too noisy for {len(evidence.decided_on)} pairs to decide ({seen}).\n{shown}"
        + (f"\nNote: {unlike}" if unlike else ""),
        policy,
    )


_LIKE_WITH_LIKE = 0.35  # CPU shares further apart than this: not the same kind of work


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
    async code (a function returning an awaitable). To check a budget, `assert_runs_within` samples
    until it can tell.
    """
    _check_counts(repeat, warmup)
    name = label or _label(fn)

    def finish(runs: list[list[float]]) -> Timing:
        return Timing(name, tuple(runs[0][warmup:]), tuple(runs[0][:warmup]))

    return _drive(_fixed_plan(warmup, repeat, [_FN]), {_FN: fn}, {_FN: name}, warmup, finish)  # type: ignore[no-any-return]


@overload
def assert_runs_within(
    fn: Callable[[], Awaitable[Any]],
    budget: float,
    *,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> Coroutine[Any, Any, Timing]: ...
@overload
def assert_runs_within(
    fn: Callable[[], Any],
    budget: float,
    *,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> Timing: ...
def assert_runs_within(
    fn: Callable[[], Any],
    budget: float,
    *,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> Timing | Coroutine[Any, Any, Timing]:
    """Fail if the `statistic` of `fn`'s run time is over `budget` seconds, sampling until it can tell.

    After `warmup` untimed calls, 7 samples; a budget with room passes there. Closer to the budget,
    each further sample is judged against this machine's speed at that moment (a reference
    workload timed next to it), until the samples show the budget holds or is exceeded with
    confidence, or `max_time` seconds of sampling are reached (default: 2 s, or 25 times the first
    samples' time; a median takes 10 further samples first): then `undecided`
    ("pass", with a TimingUndecidedWarning, or "fail"; default $HARNESS_TIMING_UNDECIDED, else
    "pass") decides. Returns the samples; await it when `fn` is async.

    Usage:

    ```python
    await assert_runs_within(lambda: client.get("/api/campaigns"), 0.2)
    ```
    """
    _check_positive(budget, "budget", "a positive number of seconds, such as 0.2")
    _check_statistic(statistic)
    _check_counts(1, warmup)
    _check_max_time(max_time)
    policy, label = _undecided_policy(undecided), _label(fn)

    def finish(evidence: _Evidence) -> Timing:
        __tracebackhide__ = True
        _judge_absolute(evidence, label, budget, policy)
        return Timing(label, tuple(evidence.samples), tuple(evidence.warmup))

    plan = _absolute_plan(budget * slack(), statistic, warmup, machine(), max_time)
    labels = {_FN: label, _REFERENCE: "the reference workload"}
    return _drive(plan, {_FN: fn, _REFERENCE: _reference_work}, labels, warmup, finish)  # type: ignore[no-any-return]


@overload
def assert_not_slower_than(
    fn: Callable[[], Awaitable[Any]],
    baseline: Callable[[], Awaitable[Any]],
    *,
    factor: float = 1.5,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> Coroutine[Any, Any, tuple[Timing, Timing]]: ...
@overload
def assert_not_slower_than(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    factor: float = 1.5,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> tuple[Timing, Timing]: ...
def assert_not_slower_than(
    fn: Callable[[], Any],
    baseline: Callable[[], Any],
    *,
    factor: float = 1.5,
    statistic: Statistic = "median",
    warmup: int = 1,
    undecided: Undecided | None = None,
    max_time: float | None = None,
) -> tuple[Timing, Timing] | Coroutine[Any, Any, tuple[Timing, Timing]]:
    """Fail if `fn` is more than `factor` times slower than `baseline`, timed in adjacent pairs.

    The pairs alternate (A B, B A, ...) and each gives a ratio, so load that comes and goes falls on
    both sides of a pair alike; sampling goes on until the ratios show the budget holds or is
    exceeded with confidence, or `max_time` is reached (then `undecided` decides, as in
    `assert_runs_within`). `statistic` is "median" or "p95": one pair must not decide. The
    baseline should do the same kind of work as `fn` (both waiting on the database, or both
    computing): load slows waiting and computing differently, and a TimingWarning says so when
    their CPU shares differ. Returns (fn's Timing, baseline's Timing);
    await it for async functions.

    Usage:

    ```python
    await assert_not_slower_than(lambda: client.get("/api/campaigns?limit=50"),
                                 lambda: client.get("/api/campaigns?limit=1"), factor=3)
    ```
    """
    _check_positive(factor, "factor", "a positive number, such as 1.5")
    _check_statistic(statistic)
    if statistic in ("min", "max"):
        # One pair decides min or max, and load falls on one side of a pair: a baseline slowed once
        # would pass any regression under "min". The fastest of each side is sound: measure both.
        msg = (
            f"assert_not_slower_than judges the ratio of each pair, and statistic={statistic!r} would let a single "
            "pair, slowed on one side by load, decide. Use 'median' or 'p95'; to compare the fastest runs, "
            f"measure both: measure(fn).assert_not_slower_than(measure(baseline), statistic={statistic!r})."
        )
        raise TimingError(msg)
    _check_counts(1, warmup)
    _check_max_time(max_time)
    policy, labels = _undecided_policy(undecided), (_label(fn), _label(baseline))

    def finish(evidence: _Evidence) -> tuple[Timing, Timing]:
        __tracebackhide__ = True
        _judge_relative(evidence, labels, factor, policy)
        return (
            Timing(labels[0], tuple(evidence.samples), tuple(evidence.warmup)),
            Timing(labels[1], tuple(evidence.baseline)),
        )

    plan = _relative_plan(factor * slack(), statistic, warmup, max_time)
    names = {_FN: labels[0], _BASELINE: labels[1]}
    return _drive(plan, {_FN: fn, _BASELINE: baseline}, names, warmup, finish)  # type: ignore[no-any-return]


# -- budgets on a block ------------------------------------------------------------------------


class assert_completes_within:  # used like a function: `with assert_completes_within(0.2):`
    """Fail if the block takes longer than `budget` seconds (scaled to this machine), or runs too many queries.

    A sync and async context manager; one run of the block is one sample, so keep it for budgets
    with room (the seed's "5,000 rows in under 5 s"). The budget is multiplied by this machine's
    calibration factor (re-measured when the block comes close) and $HARNESS_TIMING_SLACK. With
    `max_queries`, the queries run through `bind` (default: the current test's session) are
    counted too, and one failure shows both. An exception from the block passes through untouched:
    no budget is checked then.
    """

    def __init__(self, budget: float, *, max_queries: int | None = None, bind: Bind | None = None) -> None:
        _check_positive(budget, "budget", "a positive number of seconds, such as 0.2")
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
        calibration = machine()
        if elapsed > self.budget * slack() * calibration.factor:
            calibration = max(calibration, calibrate(), key=lambda c: c.factor)  # re-checked when close
        allowed = self.budget * slack() * calibration.factor
        too_slow = elapsed > allowed
        too_many = (
            self.max_queries is not None
            and self._queries is not None
            and self._queries.count > self.max_queries
        )
        if not too_slow and not too_many:
            return
        problems = []
        if too_slow:
            problems.append(
                f"took {_format(elapsed)}, over its budget of {_format(allowed)}"
                f"{_scaled_note(self.budget, calibration)}"
            )
        if too_many:
            problems.append(f"ran {self._queries.count} queries, over its budget of {self.max_queries}")  # type: ignore[union-attr]
        advice = f"\n{_ADVICE}" if too_slow else ""  # a query count is no matter of a machine's speed
        msg = f"The block {' and '.join(problems)}.{_queries_note(self._queries)}{advice}"
        raise AssertionError(msg)

    async def __aenter__(self) -> assert_completes_within:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        __tracebackhide__ = True
        self.__exit__(exc_type, exc, tb)
