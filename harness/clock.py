"""Freeze and move time: one clock for the wall and for the asyncio event loop.

    with freeze_time("2024-01-15 20:00 America/New_York") as clock:   # 8 PM in New York
        clock.tick(60)                           # the wall clock, one minute on
        clock.move_to("2024-01-16 09:00")        # anywhere; read in the clock's zone
        await clock.advance(hours=1)             # wall clock *and* event loop, running due timers

`freeze_time` works as a context manager, an async context manager and a decorator of sync and
async functions; the plugin adds the `clock` fixture and the `@pytest.mark.clock(...)` marker.

Two backends stand behind the same API: freezegun (the default) and time-machine (optional and
fast: it patches C functions instead of scanning every loaded module). Either way asyncio keeps
real time while the wall clock is frozen, so `asyncio.sleep`, `wait_for` and `asyncio.timeout`
work, and `advance()` moves the loop's clock forward on purpose.

While frozen, naive local time (`datetime.now()`, `date.today()`) is UTC, shifted by `tz_offset`
if given, on both backends. A zone says where the wall time you wrote is, and what `clock.now()`
and `move_to()` use; aware calls such as `datetime.now(ZoneInfo("America/New_York"))` are exact,
across DST changes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import difflib
import functools
import inspect
import os
import re
import time
import weakref
import zoneinfo
from collections.abc import Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar, cast

from dateutil import parser as dateutil_parser

from harness._realtime import RealClock
from harness._where import caller
from harness.exceptions import ClockError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Backend", "Clock", "explain", "freeze_time", "recording_clocks", "running_clocks", "stop_clocks"]

Backend = Literal["freezegun", "time-machine"]
_BACKENDS: tuple[Backend, ...] = ("freezegun", "time-machine")
# freezegun accepts these as the time to freeze; numbers (epoch seconds) come from time-machine.
TimeLike = str | dt.datetime | dt.date | dt.timedelta | float | Callable[[], Any] | None

P = ParamSpec("P")
R = TypeVar("R")

# How many loop iterations advance() gives the loop to run what a step made ready; a task that
# yields forever (`while True: await asyncio.sleep(0)`) cannot hold advance() longer than this.
_SETTLE_ROUNDS = 1000

_running: list[Clock] = []  # innermost last
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)+$")  # America/New_York, not 2024/01/15


# -- reading times and zones -------------------------------------------------------------------


def _zone(name: str | dt.tzinfo) -> dt.tzinfo:
    if isinstance(name, dt.tzinfo):
        return name
    if not isinstance(name, str):  # untyped callers, markers
        msg = f"tz takes a zone name such as 'America/New_York' or a tzinfo, got {type(name).__name__}: {name!r}."  # type: ignore[unreachable]
        raise ClockError(msg)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    close = difflib.get_close_matches(name, zoneinfo.available_timezones(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if not zoneinfo.available_timezones():
        hint = " This machine has no time zone database: `pip install tzdata`."
    msg = f"Unknown time zone {name!r}.{hint} Zones are IANA names such as 'America/New_York' or 'UTC'."
    raise ClockError(msg)


def _split_zone(text: str) -> tuple[str, dt.tzinfo | None]:
    """'2024-01-15 20:00 America/New_York' -> ('2024-01-15 20:00', ZoneInfo('America/New_York'))."""
    head, _, last = text.strip().rpartition(" ")
    if head and _ZONE_NAME.match(last):
        return head, _zone(last)  # looks like a zone name: a typo gets the zone error
    if head and last.isalpha() and last.upper() not in ("AM", "PM"):
        try:
            return head, zoneinfo.ZoneInfo(last)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass  # a word dateutil may know ('Jan'); let the parser decide
    return text, None


def _parse(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)  # the common case, and 50x cheaper than dateutil
    except ValueError:
        pass
    try:
        return dateutil_parser.parse(text)
    except (ValueError, OverflowError) as error:
        msg = (
            f"Cannot read {text!r} as a time ({error}). Write ISO 8601 such as '2024-01-15 20:00:00' "
            "or '2024-01-15T20:00:00-05:00', optionally followed by a zone name: "
            "'2024-01-15 20:00 America/New_York'."
        )
        raise ClockError(msg) from None


def _instant(when: TimeLike, zone: dt.tzinfo | None) -> dt.datetime:
    """The aware UTC instant `when` names; naive values are wall times in `zone` (UTC if None)."""
    if callable(when) and not isinstance(when, dt.date):
        when = when()
    if when is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(when, dt.timedelta):
        return dt.datetime.now(dt.UTC) + when
    if isinstance(when, bool) or not isinstance(when, str | dt.date | int | float):
        msg = (
            f"freeze_time() takes a string, datetime, date, timedelta, epoch seconds or None, "
            f"got {type(when).__name__}: {when!r}."
        )
        raise ClockError(msg)
    if isinstance(when, int | float):
        return dt.datetime.fromtimestamp(when, dt.UTC)
    if isinstance(when, str):
        text, named_zone = _split_zone(when)
        when, zone = _parse(text), named_zone or zone
    elif not isinstance(when, dt.datetime):
        when = dt.datetime.combine(when, dt.time())
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone or dt.UTC)
    return when.astimezone(dt.UTC)


def _seconds(delta: float | dt.timedelta | None, units: dict[str, float], what: str) -> float:
    if delta is not None and units:
        msg = f"clock.{what}() takes a delta or keyword units (hours=1), not both."
        raise ClockError(msg)
    try:
        if isinstance(delta, dt.timedelta):
            td = delta
        else:
            td = dt.timedelta(seconds=delta) if delta is not None else dt.timedelta(**units)
    except (TypeError, ValueError, OverflowError) as error:
        msg = f"clock.{what}() takes seconds, a timedelta, or days=/hours=/minutes=/seconds=/milliseconds=: {error}."
        raise ClockError(msg) from None
    seconds = td.total_seconds()
    if seconds < 0:
        msg = (
            f"clock.{what}() moves time forward only, and was asked to go {_span(-seconds)} back. "
            "To go back, use clock.move_to(<earlier time>)."
        )
        raise ClockError(msg)
    return seconds


def _span(seconds: float) -> str:
    """A duration as people say it: 30 s, 5 min, 2 h, 1 day 2 h."""
    for size, unit in ((86_400, "day"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            name = f"{whole:g} {unit}" + ("s" if unit == "day" and whole != 1 else "")
            return name if rest < 1 else f"{name} {_span(rest)}"
    return f"{seconds:g} s"


# -- backends ----------------------------------------------------------------------------------


class _Backend(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def shift(self, seconds: float) -> None: ...
    def move_to(self, instant: dt.datetime) -> None: ...


class _Real:
    """The real datetime class, where freezegun's module scan does not swap it for its fake."""

    datetime = dt.datetime


def _aware_now(cls: type[dt.datetime], tz: dt.tzinfo | None = None) -> dt.datetime:
    """freezegun's `datetime.now(tz)`, made exact: the frozen instant seen from `tz`.

    freezegun adds a zero timedelta to the converted time, which drops `fold`, so in the hour a
    DST change repeats it answers with the wrong offset (freezegun#422); it also adds tz_offset to
    aware times (freezegun#553). Naive `now()` is left to freezegun.
    """
    if tz is None:
        return _Freezegun.freezegun_now.__func__(cls)  # type: ignore[no-any-return]
    utc = cls.utcnow()  # the frozen instant, naive
    local = tz.fromutc(_Real.datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=tz))
    return cls(*local.timetuple()[:6], local.microsecond, local.tzinfo, fold=local.fold)


class _Freezegun:
    freezegun_now: Any = None  # freezegun's own FakeDatetime.now, while harness stands in for it

    def __init__(self, instant: dt.datetime, tz_offset: dt.timedelta, ticking: bool) -> None:
        import freezegun

        # pytest's own clock (--durations, junitxml times) keeps real time.
        self._freezer = freezegun.freeze_time(
            instant, tz_offset=tz_offset, tick=ticking, ignore=["_pytest.timing"]
        )

    def start(self) -> None:
        from freezegun.api import FakeDatetime

        self._factory = self._freezer.start()
        if _Freezegun.freezegun_now is None:
            _Freezegun.freezegun_now = FakeDatetime.__dict__["now"]
            FakeDatetime.now = classmethod(_aware_now)  # type: ignore[assignment,method-assign]

    def stop(self) -> None:
        from freezegun.api import FakeDatetime

        self._freezer.stop()
        if not any(clock.backend == "freezegun" for clock in _running) and _Freezegun.freezegun_now:
            FakeDatetime.now = _Freezegun.freezegun_now  # type: ignore[method-assign]
            _Freezegun.freezegun_now = None

    def shift(self, seconds: float) -> None:
        self._factory.tick(dt.timedelta(seconds=seconds))

    def move_to(self, instant: dt.datetime) -> None:
        self._factory.move_to(instant)


def _local_zone_is_utc() -> bool:
    return (
        time.timezone == 0
        and not time.daylight
        and os.environ.get("TZ", "UTC") in ("UTC", "Etc/UTC", "UTC0", "")
    )


class _TimeMachine:
    def __init__(self, instant: dt.datetime, tz_offset: dt.timedelta, ticking: bool) -> None:
        try:
            import time_machine
        except ImportError:
            msg = (
                "The 'time-machine' clock backend needs the time-machine package: "
                "`pip install 'pytest-async-harness[time-machine]'`, or use backend='freezegun'."
            )
            raise ClockError(msg) from None
        # time-machine sets TZ from the destination's zone: UTC (or the tz_offset as an Etc/GMT
        # zone) gives the naive local time freezegun gives.
        hours, rest = divmod(tz_offset, dt.timedelta(hours=1))
        if rest:
            msg = f"The time-machine backend takes whole-hour tz_offset values only, got {tz_offset}."
            raise ClockError(msg)
        self._zone = zoneinfo.ZoneInfo(f"Etc/GMT{-hours:+d}") if hours else dt.UTC
        destination: dt.datetime | float = instant.astimezone(self._zone)
        if self._zone is dt.UTC and _local_zone_is_utc():
            destination = instant.timestamp()  # no TZ to set: saves two tzset() calls, half the cost
        self._travel = time_machine.travel(destination, tick=ticking)

    def start(self) -> None:
        try:
            self._traveller = self._travel.start()
        except RuntimeError as error:  # "time-machine cannot start when freezegun is active."
            msg = (
                f"Cannot freeze with time-machine inside a freezegun freeze ({error}). "
                "Use backend='freezegun' here, or end the freezegun freeze first."
            )
            raise ClockError(msg) from None

    def stop(self) -> None:
        self._travel.stop()

    def shift(self, seconds: float) -> None:
        self._traveller.shift(dt.timedelta(seconds=seconds))

    def move_to(self, instant: dt.datetime) -> None:
        self._traveller.move_to(instant.astimezone(self._zone))


# -- the event loop ----------------------------------------------------------------------------

_class_loop_time: Any = None  # asyncio's own BaseEventLoop.time while freezegun clocks run


def _real_loop_time(_loop: asyncio.AbstractEventLoop) -> float:
    return RealClock.monotonic()


def _keep_loop_time_real(hold: bool) -> None:
    """freezegun freezes time.monotonic, which asyncio's loops read: give them the real one back."""
    global _class_loop_time
    if hold and _class_loop_time is None:
        _class_loop_time = asyncio.BaseEventLoop.time
        asyncio.BaseEventLoop.time = _real_loop_time  # type: ignore[method-assign,assignment]
    elif not hold and _class_loop_time is not None:
        asyncio.BaseEventLoop.time = _class_loop_time  # type: ignore[method-assign]
        _class_loop_time = None


class _LoopClock:
    """An advanced event loop's clock: the real monotonic clock plus the lead advance() gave it.

    While advance() steps through timers the clock is pinned, so a callback that schedules the
    next timer does it from the exact time it was due, not from that plus the real time the step
    took. The clock stays on the loop after the freeze ends: a loop's clock must never go back, or
    timers scheduled on the advanced clock would fire late by the lead.
    """

    __slots__ = ("advancing", "lead", "pinned")

    def __init__(self) -> None:
        self.lead = 0.0
        self.pinned: float | None = None
        self.advancing: asyncio.Future[None] | None = None  # set while an advance() runs

    def __call__(self) -> float:
        return self.pinned if self.pinned is not None else RealClock.monotonic() + self.lead

    def unpin(self) -> None:
        if self.pinned is not None:
            self.lead, self.pinned = self.pinned - RealClock.monotonic(), None


def _loop_clock(loop: asyncio.AbstractEventLoop) -> _LoopClock:
    clock = loop.__dict__.get("time")
    if isinstance(clock, _LoopClock):
        return clock
    if not isinstance(loop, asyncio.BaseEventLoop) or not hasattr(loop, "_scheduled"):
        msg = (
            f"clock.advance() moves asyncio's own event loop clock, and this loop is a "
            f"{type(loop).__module__}.{type(loop).__qualname__} that keeps time elsewhere (uvloop does). "
            "Run these tests on asyncio's default loop."
        )
        raise ClockError(msg)
    clock = _LoopClock()
    loop.time = clock  # type: ignore[method-assign]
    return clock


# Each timer scheduled while a clock runs, with the wall time it is due at, `_wall_moves` then,
# and how many decimals of a second that time holds. The loop's clock runs in real time while the
# wall clock stands still, so the real time a busy machine takes between a task's sleep and
# advance() must not come off the wall time the task wakes at.
_due_on_the_wall: weakref.WeakKeyDictionary[asyncio.TimerHandle, tuple[float, float, int]] = (
    weakref.WeakKeyDictionary()
)
_wall_moves = 0.0  # seconds the wall clock was moved without the loop's (tick, move_to, start, stop)
_asyncio_timers: dict[str, Any] = {}  # asyncio's own BaseEventLoop.call_at and call_later while clocks run


def _call_at_noting_the_wall(
    loop: asyncio.BaseEventLoop, when: float, callback: Callable[..., object], *args: Any, **kwargs: Any
) -> asyncio.TimerHandle:
    handle: asyncio.TimerHandle = _asyncio_timers["call_at"](loop, when, callback, *args, **kwargs)
    # `when` was read off the loop's clock a few microseconds ago: the wall time, to the millisecond
    _due_on_the_wall[handle] = (time.time() + (when - loop.time()), _wall_moves, 3)
    return handle


def _call_later_noting_the_wall(
    loop: asyncio.BaseEventLoop, delay: float, callback: Callable[..., object], *args: Any, **kwargs: Any
) -> asyncio.TimerHandle:
    handle: asyncio.TimerHandle = _asyncio_timers["call_later"](loop, delay, callback, *args, **kwargs)
    _due_on_the_wall[handle] = (time.time() + delay, _wall_moves, 6)  # asyncio.sleep: exact
    return handle


def _note_timers(hold: bool) -> None:
    if hold and not _asyncio_timers:
        _asyncio_timers.update(
            call_at=asyncio.BaseEventLoop.call_at, call_later=asyncio.BaseEventLoop.call_later
        )
        asyncio.BaseEventLoop.call_at = _call_at_noting_the_wall  # type: ignore[method-assign,assignment]
        asyncio.BaseEventLoop.call_later = _call_later_noting_the_wall  # type: ignore[method-assign,assignment]
    elif not hold and _asyncio_timers:
        asyncio.BaseEventLoop.call_at = _asyncio_timers.pop("call_at")  # type: ignore[method-assign]
        asyncio.BaseEventLoop.call_later = _asyncio_timers.pop("call_later")  # type: ignore[method-assign]


def _moving_the_wall(move: Callable[[], object]) -> None:
    """Move the wall clock alone: timers keep their place on the loop's clock, and so move on the wall."""
    global _wall_moves
    before = time.time()
    move()
    _wall_moves += time.time() - before


def _wall_offset(
    timer: asyncio.TimerHandle, origin: float, wall_origin: float, moves_then_origin: float
) -> float:
    """How far past `wall_origin` (the wall when advance() began, when `_wall_moves` was
    `moves_then_origin`) `advance()` moves the wall for `timer`. A tick() during the advance moves
    the wall on top of this, as it moves it on top of the advance."""
    noted = _due_on_the_wall.get(timer)
    if noted is None:  # scheduled before any clock ran: read it off the loop's clock, to the millisecond
        return round(timer.when() - origin, 3)
    due, moves_then, decimals = noted
    return round(due + (moves_then_origin - moves_then) - wall_origin, decimals)


def _next_timer(loop: asyncio.BaseEventLoop) -> asyncio.TimerHandle | None:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    if scheduled and not scheduled[0].cancelled():
        return scheduled[0]  # the heap's top
    return min(
        (handle for handle in scheduled if not handle.cancelled()), key=asyncio.TimerHandle.when, default=None
    )


async def _settle(loop: asyncio.BaseEventLoop) -> None:
    """Let the loop run what is ready (the callbacks of timers that came due, and what they woke)."""
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)
        if not loop._ready:  # type: ignore[attr-defined]
            return


# -- the clock ---------------------------------------------------------------------------------


class Clock:
    """A wall clock that stands still (or ticks from a chosen instant) and moves when told.

    Made by `freeze_time()`; it is the value of `with freeze_time(...) as clock` and of the
    `clock` fixture. Running clocks nest: the innermost one is the time everyone sees.
    `started_at` is where it was last started ('file:line in function'), for reports of a clock
    left running.
    """

    def __init__(
        self,
        when: TimeLike = None,
        *,
        tz: str | dt.tzinfo | None = None,
        tz_offset: float | dt.timedelta = 0,
        tick: bool = False,
        backend: Backend | None = None,
    ) -> None:
        if backend is None:
            backend = "freezegun"
        if backend not in _BACKENDS:
            msg = f"Unknown clock backend {backend!r}; choose one of {', '.join(map(repr, _BACKENDS))}."
            raise ClockError(msg)
        self.backend: Backend = backend
        self.zone: dt.tzinfo | None = _zone(tz) if tz is not None else None
        named = _split_zone(when)[1] if isinstance(when, str) else None
        if named is not None and tz is not None:
            msg = f"The zone is given twice, in {when!r} and as tz={tz!r}: give it once."
            raise ClockError(msg)
        self.zone = named or self.zone  # a zone named in the string is the clock's zone too
        self._when, self._tz = when, tz
        self._tz_offset = tz_offset if isinstance(tz_offset, dt.timedelta) else dt.timedelta(hours=tz_offset)
        if not dt.timedelta(hours=-12) <= self._tz_offset <= dt.timedelta(hours=14):
            msg = f"tz_offset must be between -12 and +14 hours, got {self._tz_offset}."
            raise ClockError(msg)
        self._ticking = tick
        _instant(when, self.zone) if not callable(when) else None  # a bad time fails here, not at start
        self._impl: _Backend | None = None
        self.started_at: str | None = None
        self._hints: list[str] = []  # what explain() adds to a failure: things this clock did that surprise

    def __repr__(self) -> str:
        if self._impl is None:
            state = "stopped"
        elif _running[-1] is not self:
            state = "suspended under an inner clock"
        else:
            state = f"at {self.now().isoformat()}"
        return f"<Clock {self.backend} {state}>"

    # -- reading and moving ----------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The clock's current time, aware, in its zone (UTC if it has none)."""
        self._check_innermost("now")
        return dt.datetime.now(self.zone or dt.UTC)

    def tick(self, delta: float | dt.timedelta | None = None, /, **units: float) -> dt.datetime:
        """Move the wall clock forward (1 second by default; `tick(90)`, `tick(minutes=5)`).

        The event loop's clock is not moved: use `await clock.advance(...)` for timers.
        """
        seconds = _seconds(1.0 if delta is None and not units else delta, units, "tick")
        self._check_innermost("tick")
        _moving_the_wall(lambda: cast("_Backend", self._impl).shift(seconds))
        self._note_timers_passed(seconds)
        return self.now()

    def _note_timers_passed(self, seconds: float) -> None:
        # tick() leaves the event loop's clock alone: timers that would have come due do not fire.
        # Said only if the test then fails (see explain), where it is likely the reason.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
        horizon = loop.time() + seconds
        now = loop.time()
        passed = [
            h for h in scheduled if not h.cancelled() and now < h.when() <= horizon
        ]  # not those due already
        hint = (
            f"clock.tick({seconds:g}) at {caller()} moved the wall clock past {len(passed)} timer(s) of the event "
            f"loop without firing them (asyncio.sleep, call_later): `await clock.advance({seconds:g})` moves "
            "the loop's clock too and fires them."
        )
        if passed and hint not in self._hints:  # a tick in a loop says it once
            self._hints.append(hint)

    def move_to(self, when: TimeLike) -> dt.datetime:
        """Jump the wall clock to `when` (forward or back); naive times are read in the clock's zone."""
        self._check_innermost("move_to")
        instant = _instant(when, self.zone)
        _moving_the_wall(lambda: cast("_Backend", self._impl).move_to(instant))
        return self.now()

    def advance(
        self, delta: float | dt.timedelta | None = None, /, **units: float
    ) -> Coroutine[Any, Any, dt.datetime]:
        """Move the wall clock and the running event loop's clock forward together, firing timers.

        `await clock.advance(hours=1)` steps from one due timer to the next, so each callback and
        each woken task sees the time it was scheduled for, and timers they set inside the window
        fire too (a job that reschedules itself every 10 minutes runs 6 times). Work waiting on a
        thread or a socket is not waited for: it finishes in real time.
        """
        if delta is None and not units:
            msg = "clock.advance() needs a duration: advance(30), advance(minutes=5) or advance(timedelta(...))."
            raise ClockError(msg)
        seconds = _seconds(delta, units, "advance")
        self._check_innermost("advance")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = (
                "clock.advance() moves the event loop's clock with the wall clock, and no event loop "
                "is running here. Await it in an async test (`await clock.advance(...)`), or move the "
                "wall clock alone with clock.tick(...) in a sync test."
            )
            raise ClockError(msg) from None
        loop_clock = _loop_clock(loop)
        return self._advance(cast("asyncio.BaseEventLoop", loop), loop_clock, seconds)

    async def _advance(
        self, loop: asyncio.BaseEventLoop, loop_clock: _LoopClock, seconds: float
    ) -> dt.datetime:
        impl = cast("_Backend", self._impl)
        if loop_clock.advancing is not None:
            msg = "clock.advance() is already running in another task; await that one instead of starting a second."
            raise ClockError(msg)
        loop_clock.advancing = loop.create_future()
        try:
            return await self._step(loop, loop_clock, impl, seconds)
        finally:
            loop_clock.advancing.set_result(None)
            loop_clock.advancing = None

    async def _step(
        self, loop: asyncio.BaseEventLoop, loop_clock: _LoopClock, impl: _Backend, seconds: float
    ) -> dt.datetime:
        # Pinned before the tasks settle: a sleep they start now is due exactly `delay` after the
        # origin, not after it plus the real time the settling took (under load, over a millisecond).
        origin = loop_clock.pinned = loop_clock()
        wall_origin, moves_then_origin = time.time(), _wall_moves
        moved = 0.0  # how far the wall clock has gone: it follows the timers' own times
        try:
            await _settle(loop)  # let tasks reach their sleeps before the time moves
            while (timer := _next_timer(loop)) is not None and timer.when() <= origin + seconds:
                loop_clock.pinned = max(loop_clock.pinned, timer.when())
                wall = min(_wall_offset(timer, origin, wall_origin, moves_then_origin), seconds)
                impl.shift(max(0.0, wall - moved))
                moved = max(moved, wall)
                await _settle(loop)
            loop_clock.pinned = origin + seconds
            impl.shift(seconds - moved)
            await _settle(loop)
        finally:
            loop_clock.unpin()
        return self.now()

    def _check_innermost(self, method: str) -> None:
        if self._impl is None:
            msg = f"clock.{method}() needs a running clock: call it inside `with freeze_time(...) as clock:`."
            raise ClockError(msg)
        if _running[-1] is not self:
            msg = (
                f"clock.{method}() was called on an outer clock while an inner freeze runs; "
                "move the innermost clock (the one its `with` block gave you)."
            )
            raise ClockError(msg)

    # -- starting and stopping -------------------------------------------------------------

    def start(self) -> Self:
        """Freeze time; prefer `with`, which always stops the clock again."""
        if self._impl is not None:
            msg = "This clock is already running; nest a second freeze_time(...) instead of re-entering one."
            raise ClockError(msg)
        if _running and _running[-1].backend != self.backend:
            msg = (
                f"Nested freezes conflict: a {_running[-1].backend} clock is running and this one asks for "
                f"{self.backend}. Use one backend for both (the outer clock's, {_running[-1].backend!r})."
            )
            raise ClockError(msg)
        instant = _instant(self._when, self.zone)  # None and timedeltas mean "from now": now is now
        kind = _Freezegun if self.backend == "freezegun" else _TimeMachine
        impl = kind(instant, self._tz_offset, self._ticking)
        _moving_the_wall(impl.start)
        self._impl = impl
        self.started_at, self._hints = caller(), []
        _running.append(self)
        for started in _recorders:
            started.append(self)
        if self.backend == "freezegun":
            _keep_loop_time_real(True)
        _note_timers(True)
        return self

    def stop(self) -> None:
        """Unfreeze; the event loop keeps any lead advance() gave it (loop time never goes back).

        Clocks stop in the reverse order they started: stopping one while an inner clock runs stops
        the inner ones first, then raises ClockError to say so.
        """
        if self._impl is None:
            return
        inner = _running[_running.index(self) + 1 :]
        for clock in [*reversed(inner), self]:
            _running.pop()
            impl, clock._impl = clock._impl, None
            _moving_the_wall(cast("_Backend", impl).stop)
        if not any(clock.backend == "freezegun" for clock in _running):
            _keep_loop_time_real(False)
        if not _running:
            _note_timers(False)
        if inner:
            msg = (
                "Clocks stop in the reverse order they started: an inner freeze was still running, "
                "and harness stopped it first."
            )
            raise ClockError(msg)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None = None, *tb: object
    ) -> None:
        if isinstance(exc, Exception):  # it happened while this clock ran: the time to say what it did
            explain(exc, [self])
        try:
            self.stop()
        except ClockError:
            if exc_type is None:  # never hide the exception that is already on its way out
                raise

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function (a test, say) to run under this clock."""
        if isinstance(func, type):
            msg = (
                "freeze_time() decorates functions; for a test class, mark it with "
                "@pytest.mark.clock(...) so that every test gets its own clock."
            )
            raise ClockError(msg)

        def fresh() -> Clock:  # one clock per call: calls may overlap (async) or recurse
            return Clock(
                self._when, tz=self._tz, tz_offset=self._tz_offset, tick=self._ticking, backend=self.backend
            )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with fresh():
                    return await func(*args, **kwargs)

            return cast("Callable[P, R]", run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with fresh():
                return func(*args, **kwargs)

        return run


def explain(error: BaseException, clocks: Iterable[Clock]) -> None:
    """Add a note to ``error`` where a frozen clock (one of ``clocks``) is the likely cause.

    Ticks that passed timers without firing them, by any of ``clocks``; and, for those still
    running, a naive datetime compared with the frozen aware one, or a timeout while the event
    loop ran in real time. A clock's own `with` block calls it for an error leaving the block;
    the pytest plugin, for the clocks of a failing test. A note is added once.
    """
    clocks = list(dict.fromkeys(clocks))
    running = [clock for clock in clocks if clock._impl is not None]
    notes = [f"harness: {hint}" for clock in clocks for hint in clock._hints]
    if running and isinstance(error, TypeError) and "offset-naive and offset-aware" in str(error):
        notes.append(
            "harness: time was frozen, and datetime.now() and datetime.utcnow() without a zone give naive "
            "datetimes while the clock (and datetime.now(tz)) give aware ones. Compare like with like: "
            "datetime.now(UTC) or clock.now()."
        )
    if isinstance(error, TimeoutError) and any(not clock._ticking for clock in running):
        notes.append(
            "harness: time was frozen, but asyncio's clock runs in real time: if this timeout waited on "
            "asyncio.sleep(), wait_for() or asyncio.timeout(), it waited real seconds. Move the event loop's "
            "clock with `await clock.advance(...)`, or freeze with tick=True."
        )
    for note in notes:
        if note not in getattr(error, "__notes__", ()):
            error.add_note(note)


_recorders: list[list[Clock]] = []


@contextlib.contextmanager
def recording_clocks() -> Iterator[list[Clock]]:
    """Collect the clocks started inside the block, in the order they started (stopped or not).

    Usage:

    ```python
    with recording_clocks() as started:
        run_the_test()
    left_running = [clock for clock in started if clock in running_clocks()]
    ```
    """
    started: list[Clock] = []
    _recorders.append(started)
    try:
        yield started
    finally:
        _recorders.remove(started)


def running_clocks() -> list[Clock]:
    """The clocks that are running now, outermost first."""
    return list(_running)


def stop_clocks(clocks: Iterable[Clock]) -> list[Clock]:
    """Stop those of ``clocks`` that are still running, innermost first; return them, outermost first.

    The pytest plugin calls it when a test ends, for the clocks the test started and did not stop,
    so that they do not freeze the tests after it.
    """
    left = [clock for clock in _running if clock in set(clocks)]
    for clock in reversed(left):
        with contextlib.suppress(ClockError):  # an inner clock of a kept one: stopped with the rest
            clock.stop()
    return left


def freeze_time(
    when: TimeLike = None,
    *,
    tz: str | dt.tzinfo | None = None,
    tz_offset: float | dt.timedelta = 0,
    tick: bool = False,
    backend: Backend | None = None,
) -> Clock:
    """A clock frozen at `when` (now, if None), to use with `with`, `async with` or as a decorator.

    `when` takes what freezegun takes (ISO strings, datetimes, aware or naive, dates, timedeltas
    from now) plus epoch seconds; a string may end with a zone name, as in
    "2024-01-15 20:00 America/New_York", and `tz` gives the zone otherwise. Naive times are UTC
    unless a zone is given. `tick=True` lets time run on from `when`. `tz_offset` (hours or a
    timedelta) shifts naive local time, as in freezegun. `backend` is "freezegun" (default) or
    "time-machine" (needs the package; ~500x cheaper to start and stop).
    """
    return Clock(when, tz=tz, tz_offset=tz_offset, tick=tick, backend=backend)


def _advance_under_way(loop_clock: _LoopClock) -> asyncio.Future[None] | None:
    return loop_clock.advancing  # read afresh each time: another task sets and clears it


async def wait(seconds: float) -> None:
    """Let `seconds` pass for the running task: on the harness clock when one runs, else for real.

    Under a running clock the wait costs no real time: the clock (wall and loop) advances by
    `seconds`, firing the timers due on the way. Inside an `advance()` already under way it is a
    plain `asyncio.sleep`, which that advance steps to. Used by mocks that answer late.
    """
    loop = asyncio.get_running_loop()
    if not _running:
        await asyncio.sleep(seconds)
        return
    loop_clock = _loop_clock(loop)
    if loop_clock.advancing is None:
        await _running[-1].advance(seconds)
        return
    deadline = loop_clock() + seconds
    while (advancing := _advance_under_way(loop_clock)) is not None:
        # Another task's advance() steps to our timer if its window reaches it; if not, the
        # rest of the wait is ours to advance once that one ends (never two at once).
        sleeping = asyncio.ensure_future(asyncio.sleep(max(0.0, deadline - loop_clock())))
        await asyncio.wait({sleeping, advancing}, return_when=asyncio.FIRST_COMPLETED)
        if sleeping.done():
            return
        sleeping.cancel()
    if (left := deadline - loop_clock()) > 0:
        await _running[-1].advance(left)


def wait_sync(seconds: float) -> None:
    """`wait` for synchronous code: tick the running clock's wall time, or sleep for real."""
    if _running:
        _running[-1].tick(seconds)
    else:
        time.sleep(seconds)
