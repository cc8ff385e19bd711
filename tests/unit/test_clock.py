"""harness.clock: freezing and moving the wall clock, and advancing the event loop's clock with it."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from zoneinfo import ZoneInfo

import pydantic
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from harness import ClockError, freeze_time
from harness.clock import Clock
from tests.factories import AccountFactory

ET = ZoneInfo("America/New_York")
UTC = dt.UTC

pytestmark = pytest.mark.parametrize("backend", ["freezegun", "time-machine"])


def test_a_naive_time_is_utc_and_naive_local_time_reads_utc(backend: str) -> None:
    with freeze_time("2024-01-15 20:00:00", backend=backend) as clock:
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)
        assert dt.datetime.now() == dt.datetime(2024, 1, 15, 20)
        assert dt.date.today() == dt.date(2024, 1, 15)
        assert time.time() == dt.datetime(2024, 1, 15, 20, tzinfo=UTC).timestamp()
        assert clock.now() == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)
    assert dt.datetime.now().year >= 2026  # thawed


def test_naive_local_time_is_utc_whatever_the_machines_zone(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        with freeze_time("2024-01-15 20:00", backend=backend):
            assert dt.datetime.now() == dt.datetime(2024, 1, 15, 20)
        assert time.localtime().tm_zone in ("EST", "EDT")  # the machine's zone is back
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("when", "tz"),
    [
        ("2024-01-15 20:00 America/New_York", None),
        ("2024-01-15 20:00", "America/New_York"),
        ("2024-01-15 20:00", ET),
    ],
)
def test_a_zone_says_where_the_wall_time_is(backend: str, when: str, tz: object) -> None:
    with freeze_time(when, tz=tz, backend=backend) as clock:  # type: ignore[arg-type]
        assert dt.datetime.now(ET) == dt.datetime(2024, 1, 15, 20, tzinfo=ET)
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 16, 1, tzinfo=UTC)
        assert clock.now().tzinfo == ET
        assert clock.now().hour == 20
        assert dt.datetime.now() == dt.datetime(2024, 1, 16, 1)  # naive local time stays UTC


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (dt.datetime(2024, 1, 15, 20, tzinfo=ET), dt.datetime(2024, 1, 16, 1, tzinfo=UTC)),
        (dt.datetime(2024, 1, 15, 20), dt.datetime(2024, 1, 15, 20, tzinfo=UTC)),
        (dt.date(2024, 1, 15), dt.datetime(2024, 1, 15, tzinfo=UTC)),
        ("2024-01-15T20:00:00-05:00", dt.datetime(2024, 1, 16, 1, tzinfo=UTC)),
        ("Jan 15 2024 8:00 PM", dt.datetime(2024, 1, 15, 20, tzinfo=UTC)),  # dateutil's forms too
        (1705348800, dt.datetime(2024, 1, 15, 20, tzinfo=UTC)),
        (lambda: dt.datetime(2024, 1, 15, 20), dt.datetime(2024, 1, 15, 20, tzinfo=UTC)),
    ],
)
def test_it_takes_what_freezegun_takes(backend: str, when: object, expected: dt.datetime) -> None:
    with freeze_time(when, backend=backend):  # type: ignore[arg-type]
        assert dt.datetime.now(UTC) == expected


def test_a_timedelta_or_none_freezes_relative_to_now(backend: str) -> None:
    before = dt.datetime.now(UTC)
    with freeze_time(dt.timedelta(days=2), backend=backend):
        frozen = dt.datetime.now(UTC)
        time.sleep(0.002)
        assert dt.datetime.now(UTC) == frozen
    assert dt.timedelta(days=2) <= frozen - before < dt.timedelta(days=2, seconds=5)
    with freeze_time(backend=backend):
        assert dt.datetime.now(UTC) - before < dt.timedelta(seconds=5)


def test_tz_offset_shifts_naive_local_time_only(backend: str) -> None:
    with freeze_time("2024-01-15 20:00", tz_offset=-5, backend=backend):
        assert dt.datetime.now() == dt.datetime(2024, 1, 15, 15)
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)  # freezegun#553 added it here
        assert time.time() == dt.datetime(2024, 1, 15, 20, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tz_offset": 15}, "tz_offset must be between -12 and +14 hours, got 15:00:00."),
        ({"tz": 5}, "tz takes a zone name such as 'America/New_York' or a tzinfo, got int: 5."),
        (
            {"when": "2024-01-15 20:00 Europe/Paris", "tz": "America/New_York"},
            "The zone is given twice, in '2024-01-15 20:00 Europe/Paris' and as tz='America/New_York': give it once.",
        ),
    ],
)
def test_contradictory_or_impossible_zones_are_refused(
    backend: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ClockError) as raised:
        freeze_time(backend=backend, **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_a_slashed_date_is_not_a_zone(backend: str) -> None:
    with freeze_time("20:00 2024/01/15", backend=backend):
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)


def test_tick_moves_only_forward(backend: str) -> None:
    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        assert clock.tick() == dt.datetime(2024, 1, 15, 20, 0, 1, tzinfo=UTC)
        assert clock.tick(1.5).second == 2
        assert clock.tick(dt.timedelta(minutes=1)).minute == 1
        assert clock.tick(hours=1).hour == 21
        for impossible in (float("nan"), float("inf")):
            with pytest.raises(ClockError, match=r"clock.tick\(\) takes seconds, a timedelta"):
                clock.tick(impossible)
        with pytest.raises(ClockError) as raised:
            clock.tick(-1)
    assert str(raised.value) == (
        "clock.tick() moves time forward only, and was asked to go 1 s back. "
        "To go back, use clock.move_to(<earlier time>)."
    )


@pytest.mark.parametrize(
    ("back", "said"),
    [
        (dt.timedelta(seconds=0.5), "0.5 s"),
        (dt.timedelta(minutes=90), "1 h 30 min"),
        (dt.timedelta(days=1, hours=2), "1 day 2 h"),
        (dt.timedelta(days=2), "2 days"),
    ],
)
def test_going_back_is_said_as_people_say_durations(backend: str, back: dt.timedelta, said: str) -> None:
    with freeze_time("2024-01-15 20:00", backend=backend) as clock, pytest.raises(ClockError) as raised:
        clock.tick(-back)
    assert f"was asked to go {said} back." in str(raised.value)


def test_move_to_goes_anywhere_in_the_clocks_zone(backend: str) -> None:
    with freeze_time("2024-01-15 20:00 America/New_York", backend=backend) as clock:
        clock.move_to("2024-01-16 09:00")
        assert dt.datetime.now(ET) == dt.datetime(2024, 1, 16, 9, tzinfo=ET)
        clock.move_to(dt.datetime(2023, 1, 1, tzinfo=UTC))
        assert dt.datetime.now(UTC) == dt.datetime(2023, 1, 1, tzinfo=UTC)


def test_aware_times_are_right_across_dst_changes(backend: str) -> None:
    with freeze_time("2024-03-10 01:30 America/New_York", backend=backend) as clock:
        assert dt.datetime.now(ET).utcoffset() == dt.timedelta(hours=-5)
        clock.tick(hours=1)  # 02:30 does not exist that night: the clocks jump to 03:30 EDT
        assert dt.datetime.now(ET).replace(tzinfo=None) == dt.datetime(2024, 3, 10, 3, 30)
        assert dt.datetime.now(ET).utcoffset() == dt.timedelta(hours=-4)
        clock.move_to("2024-11-03 00:30")
        clock.tick(hours=1)
        first = dt.datetime.now(ET)
        clock.tick(hours=1)  # 01:30 happens twice: EDT, then EST
        second = dt.datetime.now(ET)
    assert first.replace(tzinfo=None) == second.replace(tzinfo=None) == dt.datetime(2024, 11, 3, 1, 30)
    assert (first.utcoffset(), second.utcoffset()) == (dt.timedelta(hours=-4), dt.timedelta(hours=-5))


class Event(pydantic.BaseModel):  # app models are defined before a test freezes time
    at: dt.datetime
    day: dt.date


def test_objects_made_while_frozen_behave(backend: str) -> None:
    with freeze_time("2024-01-15 20:00", backend=backend):
        event = Event(at=dt.datetime.now(UTC), day=dt.date.today())
        assert isinstance(dt.datetime.now(), dt.datetime)
        if backend == "time-machine":  # freezegun's now() returns its FakeDatetime subclass
            assert type(dt.datetime.now()) is dt.datetime
    assert event.at == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)
    assert event.model_dump_json() == '{"at":"2024-01-15T20:00:00Z","day":"2024-01-15"}'


async def test_rows_written_while_frozen_read_back(backend: str, db_session: AsyncSession) -> None:
    with freeze_time("2024-01-15 20:00 America/New_York", backend=backend):
        account = await AccountFactory.create(joined=dt.datetime.now(UTC))
        await db_session.commit()  # the rollback scope still discards it
        await db_session.refresh(account)
    joined = (
        account.joined if account.joined.tzinfo else account.joined.replace(tzinfo=UTC)
    )  # SQLite keeps no offset
    assert joined == dt.datetime(2024, 1, 16, 1, tzinfo=UTC)


async def test_asyncio_keeps_real_time_under_a_frozen_wall_clock(backend: str) -> None:
    loop = asyncio.get_running_loop()
    with freeze_time("2024-01-15 20:00", backend=backend):
        start = loop.time()
        await asyncio.sleep(0.01)
        assert loop.time() > start
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        fired = asyncio.Event()
        loop.call_later(0.01, fired.set)
        await asyncio.wait_for(fired.wait(), timeout=5)
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 15, 20, tzinfo=UTC)


async def test_advance_runs_each_timer_at_its_own_time(backend: str) -> None:
    seen: list[dt.datetime] = []

    async def every_ten_minutes() -> None:
        while True:
            await asyncio.sleep(600)
            seen.append(dt.datetime.now(UTC))

    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        job = asyncio.create_task(every_ten_minutes())
        await asyncio.sleep(0)  # the job reaches its first sleep
        assert await clock.advance(hours=1) == dt.datetime(2024, 1, 15, 21, tzinfo=UTC)
        job.cancel()
    # each step starts from the time the timer was due, so the job does not drift
    assert seen == [
        dt.datetime(2024, 1, 15, 20, 0, tzinfo=UTC) + dt.timedelta(minutes=10 * n) for n in range(1, 7)
    ]


async def test_a_sleep_wakes_at_the_wall_time_it_asked_for_however_long_the_test_paused(backend: str) -> None:
    # The loop's clock runs in real time while the wall clock stands still. On a busy machine the
    # test may be preempted between a task's sleep and advance(); that pause must not come off
    # the wall time the task wakes at (once it did: 20:09:59.980 instead of 20:10).
    woke: list[dt.datetime] = []

    async def job(delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append(dt.datetime.now(UTC))

    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        ten_minutes = asyncio.create_task(job(600))
        await asyncio.sleep(0)  # it begins its sleep at 20:00
        time.sleep(0.05)  # noqa: ASYNC251  preempted: the loop's clock runs on, the wall clock stands still
        clock.tick(60)  # the wall alone moves a minute: the job's timer is a minute later on the wall
        an_hour = asyncio.create_task(job(3600))
        await asyncio.sleep(0)  # it begins its sleep at 20:01
        time.sleep(0.05)  # noqa: ASYNC251
        assert await clock.advance(hours=1) == dt.datetime(2024, 1, 15, 21, 1, tzinfo=UTC)
        assert woke == [
            dt.datetime(2024, 1, 15, 20, 11, tzinfo=UTC),
            dt.datetime(2024, 1, 15, 21, 1, tzinfo=UTC),
        ]
        await asyncio.gather(ten_minutes, an_hour)


async def test_a_tick_during_advance_moves_later_timers_once(backend: str) -> None:
    woke: list[dt.datetime] = []

    with freeze_time("2024-01-15 20:00", backend=backend) as clock:

        async def ticker() -> None:
            await asyncio.sleep(5)
            clock.tick(100)  # the wall alone, as a late sync mock's wait_sync does

        async def sleeper() -> None:
            await asyncio.sleep(10)
            woke.append(dt.datetime.now(UTC))

        tasks = [asyncio.create_task(ticker()), asyncio.create_task(sleeper())]
        await asyncio.sleep(0)
        assert await clock.advance(60) == dt.datetime(2024, 1, 15, 20, 2, 40, tzinfo=UTC)  # 60 + 100
        await asyncio.gather(*tasks)
    assert woke == [dt.datetime(2024, 1, 15, 20, 1, 50, tzinfo=UTC)]  # 10 s on the loop, 100 s ticked


async def test_a_retry_with_back_off_finishes_without_waiting(backend: str) -> None:
    attempts: list[dt.datetime] = []

    async def send_with_retry() -> str:
        for delay in (30, 60, 120):
            attempts.append(dt.datetime.now(UTC))
            if len(attempts) == 3:
                return "sent"
            await asyncio.sleep(delay)
        return "gave up"

    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        sending = asyncio.create_task(send_with_retry())
        await clock.advance(seconds=90)
        # done already: a real second is plenty, where the back-off alone is 90 seconds
        assert await asyncio.wait_for(sending, timeout=1) == "sent"
    assert [a.time() for a in attempts] == [dt.time(20, 0), dt.time(20, 0, 30), dt.time(20, 1, 30)]


async def test_advance_leaves_later_timers_and_the_loop_clock_never_goes_back(backend: str) -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    loop.call_later(59, fired.append, "59 s")
    late = loop.call_later(61, fired.append, "61 s")
    before = loop.time()
    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        await clock.advance(60)
        assert fired == ["59 s"]
        assert dt.datetime.now(UTC) == dt.datetime(2024, 1, 15, 20, 1, tzinfo=UTC)
    assert loop.time() >= before + 60  # after the freeze the loop keeps its lead
    late.cancel()


def test_advance_needs_a_running_loop(backend: str) -> None:
    with freeze_time("2024-01-15 20:00", backend=backend) as clock, pytest.raises(ClockError) as raised:
        clock.advance(hours=1)
    assert str(raised.value) == (
        "clock.advance() moves the event loop's clock with the wall clock, and no event loop is running here. "
        "Await it in an async test (`await clock.advance(...)`), or move the wall clock alone with "
        "clock.tick(...) in a sync test."
    )


async def test_advance_refuses_a_negative_or_missing_delta(backend: str) -> None:
    with freeze_time("2024-01-15 20:00", backend=backend) as clock:
        with pytest.raises(ClockError, match=r"clock.advance\(\) moves time forward only"):
            clock.advance(minutes=-5)
        with pytest.raises(ClockError, match=r"needs a duration: advance\(30\)"):
            clock.advance()
        with pytest.raises(ClockError, match="takes a delta or keyword units"):
            clock.advance(5, minutes=1)


def test_an_unreadable_time_is_refused(backend: str) -> None:
    with pytest.raises(ClockError) as raised:
        freeze_time("2024-13-45 25:00", backend=backend)
    assert str(raised.value).startswith("Cannot read '2024-13-45 25:00' as a time (")
    assert str(raised.value).endswith(
        "Write ISO 8601 such as '2024-01-15 20:00:00' or '2024-01-15T20:00:00-05:00', optionally followed "
        "by a zone name: '2024-01-15 20:00 America/New_York'."
    )


def test_an_unknown_zone_is_refused_with_suggestions(backend: str) -> None:
    with pytest.raises(ClockError) as raised:
        freeze_time("2024-01-15 20:00 America/New_Yrok", backend=backend)
    assert str(raised.value) == (
        "Unknown time zone 'America/New_Yrok'. Did you mean 'America/New_York'? "
        "Zones are IANA names such as 'America/New_York' or 'UTC'."
    )
    with pytest.raises(ClockError, match="Unknown time zone 'Mars/Olympus'"):
        freeze_time("2024-01-15", tz="Mars/Olympus", backend=backend)


def test_nested_freezes_stack_and_unwind(backend: str) -> None:
    with freeze_time("2024-01-15", backend=backend) as outer:
        with freeze_time("2030-06-01", backend=backend) as inner:
            assert dt.date.today() == dt.date(2030, 6, 1)
            with pytest.raises(ClockError, match=r"clock.tick\(\) was called on an outer clock"):
                outer.tick()
            inner.tick(days=1)
            assert dt.date.today() == dt.date(2030, 6, 2)
        assert dt.date.today() == dt.date(2024, 1, 15)
        with pytest.raises(ClockError, match="already running; nest a second freeze_time"):
            outer.start()


def test_nested_freezes_with_different_backends_conflict(backend: str) -> None:
    other = "time-machine" if backend == "freezegun" else "freezegun"
    with freeze_time("2024-01-15", backend=backend), pytest.raises(ClockError) as raised:
        freeze_time("2030-01-01", backend=other).start()  # type: ignore[arg-type]
    assert str(raised.value) == (
        f"Nested freezes conflict: a {backend} clock is running and this one asks for {other}. "
        f"Use one backend for both (the outer clock's, {backend!r})."
    )


def test_clocks_stop_in_reverse_order(backend: str) -> None:
    outer = freeze_time("2024-01-15", backend=backend).start()
    inner = freeze_time("2030-01-01", backend=backend).start()
    assert repr(outer) == f"<Clock {backend} suspended under an inner clock>"
    with pytest.raises(
        ClockError, match="Clocks stop in the reverse order they started: an inner freeze was still"
    ):
        outer.stop()
    assert dt.date.today().year >= 2026  # both stopped: nothing stays frozen
    assert repr(inner) == f"<Clock {backend} stopped>"


def test_an_exception_leaves_nothing_frozen(backend: str) -> None:
    with pytest.raises(KeyError), freeze_time("2024-01-15", backend=backend):
        freeze_time("2030-01-01", backend=backend).start()  # started, never stopped
        raise KeyError("the test's own failure")  # noqa: EM101
    assert dt.date.today().year >= 2026


def test_decorates_sync_and_async_functions(backend: str) -> None:
    @freeze_time("2024-01-15 20:00 America/New_York", backend=backend)
    def hour_in_new_york() -> int:
        return dt.datetime.now(ET).hour

    @freeze_time("2024-01-15 09:00 America/New_York", backend=backend)
    async def hour_after_a_sleep() -> int:
        await asyncio.sleep(0.001)
        return dt.datetime.now(ET).hour

    assert hour_in_new_york() == 20
    assert hour_in_new_york() == 20  # a decorated function freezes afresh on every call
    assert asyncio.run(hour_after_a_sleep()) == 9
    assert dt.datetime.now().year >= 2026


def test_a_decorated_function_gets_a_fresh_clock_per_call(backend: str) -> None:
    @freeze_time(backend=backend)  # "now", at each call
    def frozen_now() -> dt.datetime:
        return dt.datetime.now(UTC)

    @freeze_time("2024-01-15", backend=backend)
    async def overlapping(pause: float) -> dt.date:
        await asyncio.sleep(pause)
        return dt.date.today()

    first = frozen_now()
    time.sleep(0.01)
    assert frozen_now() > first

    async def both() -> list[dt.date]:
        return list(await asyncio.gather(overlapping(0), overlapping(0.01)))

    # Frozen time is global to the process: overlapping freezes cannot end out of order.
    with pytest.raises(ClockError, match="Clocks stop in the reverse order they started"):
        asyncio.run(both())
    assert dt.date.today().year >= 2026


def test_a_class_cannot_be_decorated(backend: str) -> None:
    with pytest.raises(ClockError, match=r"for a test class, mark it with @pytest.mark.clock"):
        freeze_time("2024-01-15", backend=backend)(type("TestSomething", (), {}))


async def test_async_context_manager(backend: str) -> None:
    async with freeze_time("2024-01-15", backend=backend) as clock:
        assert isinstance(clock, Clock)
        assert dt.date.today() == dt.date(2024, 1, 15)
    assert dt.date.today().year >= 2026


def test_an_unknown_backend_is_refused(backend: str) -> None:
    with pytest.raises(
        ClockError, match="Unknown clock backend 'timemachine'; choose one of 'freezegun', 'time-machine'"
    ):
        freeze_time(backend="timemachine")  # type: ignore[arg-type]


def test_time_machine_missing_says_how_to_install(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "time_machine", None)
    clock = freeze_time("2024-01-15", backend=backend)
    if backend == "freezegun":
        with clock:
            return
    with pytest.raises(ClockError) as raised:
        clock.start()
    assert str(raised.value) == (
        "The 'time-machine' clock backend needs the time-machine package: "
        "`pip install 'pytest-async-harness[time-machine]'`, or use backend='freezegun'."
    )


def test_a_stopped_clock_cannot_be_read_or_moved(backend: str) -> None:
    clock = freeze_time("2024-01-15", backend=backend)
    with pytest.raises(ClockError) as raised:
        clock.now()
    assert (
        str(raised.value)
        == "clock.now() needs a running clock: call it inside `with freeze_time(...) as clock:`."
    )


def test_time_machine_inside_plain_freezegun_is_refused(backend: str) -> None:
    import freezegun

    with freezegun.freeze_time("2024-01-15"), pytest.raises(ClockError) as raised:
        freeze_time("2030-01-01", backend="time-machine").start()
    assert str(raised.value) == (
        "Cannot freeze with time-machine inside a freezegun freeze (time-machine cannot start when freezegun is "
        "active.). Use backend='freezegun' here, or end the freezegun freeze first."
    )


async def test_two_advances_at_once_are_refused(backend: str) -> None:
    """A second advance() while one runs in another task would share the loop clock."""
    with freeze_time("2024-01-15 12:00:00", backend=backend) as clock:
        first = asyncio.create_task(clock.advance(seconds=5))
        await asyncio.sleep(0)
        with pytest.raises(ClockError) as excinfo:
            await clock.advance(seconds=1)
        await first
    assert excinfo.value.args == (
        "clock.advance() is already running in another task; await that one instead of starting a second.",
    )
