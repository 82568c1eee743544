"""chm.core.cron, pure: five-field expressions, zones, ticks and their DST rules,
Quartz conversion. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chm.core.cron import (
    CronError,
    TimezoneError,
    check_timezone,
    latest_tick,
    normalize_cron,
    quartz_to_cron,
    ticks_after,
    zone,
)

MICROSECOND = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- normalize_cron -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "stored"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@Daily", "0 0 * * *"),
        ("  @hourly ", "0 * * * *"),
    ],
)
def test_presets_become_their_five_fields(expression: str, stored: str) -> None:
    assert normalize_cron(expression) == stored


@pytest.mark.parametrize(
    ("expression", "stored"),
    [
        ("*/15  *  * * *", "*/15 * * * *"),
        ("\t30 2 * *\nmon-fri ", "30 2 * * MON-FRI"),
        ("0 0 L * *", "0 0 L * *"),
        ("0 9 * * 1#2", "0 9 * * 1#2"),
        ("0 0 * * 7", "0 0 * * 7"),
        ("5,10 1-3 1/2 jan,jul *", "5,10 1-3 1/2 JAN,JUL *"),
    ],
)
def test_expressions_are_stored_with_single_spaces_in_upper_case(
    expression: str, stored: str
) -> None:
    assert normalize_cron(expression) == stored


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "has 4"),
        ("* * * * * *", "has 6"),
        ("@reboot", "not a schedule preset"),
        ("@every 5m", "not a schedule preset"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 24 * * *", "not a valid cron expression"),
        ("0 0 0 * *", "not a valid cron expression"),
        ("0 0 * 13 *", "not a valid cron expression"),
        ("0 0 * * 8", "not a valid cron expression"),
        ("0 0 30 2 *", "not a valid cron expression"),  # never fires
        ("x y z a b", "not a valid cron expression"),
        ("0 0 * * " + "1," * 120 + "2", "longer than 200"),
    ],
)
def test_expressions_cron_cannot_use_are_refused_with_the_reason(
    expression: str, reason: str
) -> None:
    with pytest.raises(CronError, match=reason):
        normalize_cron(expression)
    assert issubclass(CronError, ValueError)  # a 422 on the field, like any value error


# --- zones ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"])
def test_iana_zones_are_accepted(name: str) -> None:
    assert check_timezone(name) == name
    assert zone(name).key == name


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "Europe/berlin ", "../../etc/passwd", "", "/etc/localtime", "x" * 65]
)
def test_names_that_are_no_iana_zone_are_refused(name: str) -> None:
    with pytest.raises(TimezoneError):
        check_timezone(name)


# --- latest_tick and ticks_after ------------------------------------------------------


def test_a_tick_exactly_at_the_time_is_the_latest() -> None:
    assert latest_tick("0 * * * *", "UTC", utc(2026, 3, 15, 12)) == utc(2026, 3, 15, 12)
    assert latest_tick("0 * * * *", "UTC", utc(2026, 3, 15, 12) - MICROSECOND) == utc(
        2026, 3, 15, 11
    )
    assert latest_tick("0 * * * *", "UTC", utc(2026, 3, 15, 12, 59, 59, 999_999)) == utc(
        2026, 3, 15, 12
    )


def test_the_latest_tick_is_in_utc_whatever_the_zone_of_the_time_given() -> None:
    from zoneinfo import ZoneInfo

    at = datetime(2026, 3, 15, 13, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 12:00 UTC
    tick = latest_tick("0 12 * * *", "UTC", at)
    assert tick == utc(2026, 3, 15, 12) and tick is not None and tick.tzinfo is UTC


def test_a_schedule_whose_last_tick_is_years_back_is_found() -> None:
    assert latest_tick("0 0 29 2 *", "UTC", utc(2026, 3, 15)) == utc(2024, 2, 29)
    # 2100 is no leap year: seven years back from 2103.
    assert latest_tick("0 0 29 2 *", "UTC", utc(2103, 3, 1)) == utc(2096, 2, 29)


def test_ticks_after_are_strictly_after_and_up_to_until_inclusive() -> None:
    ticks = ticks_after("*/10 * * * *", "UTC", utc(2026, 3, 15, 12), utc(2026, 3, 15, 12, 40), 100)
    assert ticks == [utc(2026, 3, 15, 12, m) for m in (10, 20, 30, 40)]


def test_ticks_after_stop_at_the_limit() -> None:
    ticks = ticks_after("* * * * *", "UTC", utc(2026, 3, 15, 12), utc(2026, 3, 16), 3)
    assert ticks == [utc(2026, 3, 15, 12, m) for m in (1, 2, 3)]
    assert ticks_after("* * * * *", "UTC", utc(2026, 3, 15, 12), utc(2026, 3, 16), 0) == []


def test_ticks_after_an_empty_or_reversed_range_are_none() -> None:
    at = utc(2026, 3, 15, 12)
    assert ticks_after("* * * * *", "UTC", at, at, 10) == []
    assert ticks_after("* * * * *", "UTC", at, at - timedelta(hours=1), 10) == []


def test_ticks_are_read_in_the_schedules_zone() -> None:
    ticks = ticks_after("0 9 * * MON-FRI", "Asia/Tokyo", utc(2026, 3, 13), utc(2026, 3, 17), 10)
    # 09:00 in Tokyo (UTC+9) is midnight UTC; Saturday and Sunday are skipped.
    assert ticks == [utc(2026, 3, 16), utc(2026, 3, 17)]


# DST: (zone, cron, after, until) and the ticks a person expects, in UTC.
DST_CASES = {
    # Spring forward, Berlin, 29 March 2026 02:00 CET -> 03:00 CEST: the 02:30
    # job runs once, at 03:00 CEST (01:00 UTC), between 01:30 and 00:30 UTC days.
    "berlin-spring-fixed-time": (
        "Europe/Berlin",
        "30 2 * * *",
        utc(2026, 3, 27),
        utc(2026, 3, 31),
        [
            utc(2026, 3, 27, 1, 30),
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1),
            utc(2026, 3, 30, 0, 30),
        ],
    ),
    # The hourly job has no 02:00 that night: 01:00 CET (00:00 UTC), then 03:00 CEST.
    "berlin-spring-hourly": (
        "Europe/Berlin",
        "0 * * * *",
        utc(2026, 3, 28, 23, 30),
        utc(2026, 3, 29, 2, 30),
        [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)],
    ),
    # Autumn, Berlin, 25 October 2026 03:00 CEST -> 02:00 CET: 02:00-02:59
    # happens twice. The fixed-time job runs once, in the first copy (00:30 UTC).
    "berlin-autumn-fixed-time": (
        "Europe/Berlin",
        "30 2 * * *",
        utc(2026, 10, 24),
        utc(2026, 10, 27),
        [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
    ),
    # A wildcard-hour job runs in both copies.
    "berlin-autumn-every-30-minutes": (
        "Europe/Berlin",
        "*/30 * * * *",
        utc(2026, 10, 24, 23, 45),
        utc(2026, 10, 25, 2, 0),
        [
            utc(2026, 10, 25, 0),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2),
        ],
    ),
    # Spring forward, New York, 8 March 2026 02:00 EST -> 03:00 EDT: the 02:30
    # job runs at 03:00 EDT (07:00 UTC).
    "new-york-spring-fixed-time": (
        "America/New_York",
        "30 2 * * *",
        utc(2026, 3, 7),
        utc(2026, 3, 10),
        [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)],
    ),
    # Autumn, New York, 1 November 2026 02:00 EDT -> 01:00 EST: 01:00-01:59 twice.
    "new-york-autumn-fixed-time": (
        "America/New_York",
        "30 1 * * *",
        utc(2026, 10, 31),
        utc(2026, 11, 3),
        [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
    ),
    "new-york-autumn-every-30-minutes": (
        "America/New_York",
        "*/30 * * * *",
        utc(2026, 11, 1, 4, 45),
        utc(2026, 11, 1, 7, 0),
        [
            utc(2026, 11, 1, 5),
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 6),
            utc(2026, 11, 1, 6, 30),
            utc(2026, 11, 1, 7),
        ],
    ),
}


@pytest.mark.parametrize("case", DST_CASES.values(), ids=DST_CASES.keys())
def test_ticks_across_daylight_saving_changes_are_what_a_person_expects(
    case: tuple[str, str, datetime, datetime, list[datetime]],
) -> None:
    timezone, cron, after, until, expected = case
    assert ticks_after(cron, timezone, after, until, 100) == expected


@pytest.mark.parametrize("case", DST_CASES.values(), ids=DST_CASES.keys())
def test_the_latest_tick_agrees_with_the_forward_walk_minute_by_minute(
    case: tuple[str, str, datetime, datetime, list[datetime]],
) -> None:
    """Around every change, at every minute and just before it: the latest tick
    is the last of the forward walk's ticks at or before that time (the
    backward walk alone skipped the first copy of a repeated hour's tick)."""
    timezone, cron, after, until, _ = case
    ticks = ticks_after(cron, timezone, after - timedelta(days=2), until + timedelta(days=1), 5000)
    at = after
    while at <= until:
        for moment in (at, at - MICROSECOND, at + timedelta(seconds=30)):
            expected = max(tick for tick in ticks if tick <= moment)
            assert latest_tick(cron, timezone, moment) == expected, moment
        at += timedelta(minutes=1)


def test_in_the_second_copy_of_the_repeated_hour_the_fixed_time_tick_is_that_nights() -> None:
    # 02:10 CET on 25 October 2026 (01:10 UTC): the job ran at 02:30 CEST, 00:30 UTC.
    assert latest_tick("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10)) == utc(
        2026, 10, 25, 0, 30
    )
    # 01:10 EST on 1 November 2026 (06:10 UTC): the job ran at 01:30 EDT, 05:30 UTC.
    assert latest_tick("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 10)) == utc(
        2026, 11, 1, 5, 30
    )


# --- Quartz -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quartz", "cron"),
    [
        ("0 0 12 * * ?", "0 12 * * *"),
        ("0 0 12 * * ? *", "0 12 * * *"),
        ("0 15 10 ? * MON-FRI", "15 10 * * MON-FRI"),
        ("0 15 10 ? * mon", "15 10 * * MON"),
        # Quartz numbers days 1 (Sunday) to 7 (Saturday); cron 0 (Sunday) to 6.
        ("0 0 12 ? * 1", "0 12 * * 0"),
        ("0 0 12 ? * 7", "0 12 * * 6"),
        ("0 0 12 ? * 2-6", "0 12 * * 1-5"),
        ("0 0 12 ? * 1,7", "0 12 * * 0,6"),
        ("0 0 12 ? * 2/2", "0 12 * * 1-6/2"),  # Mon, Wed, Fri: never Sunday
        ("0 0 12 ? * 2/3", "0 12 * * 1-6/3"),  # Mon, Thu
        ("0 0 12 ? * MON/2", "0 12 * * 1-6/2"),
        ("0 0 12 ? * */2", "0 12 * * 0-6/2"),  # Sun, Tue, Thu, Sat
        ("0 0 12 ? * 6L", "0 12 * * 5L"),  # the last Friday
        ("0 0 12 ? * 2#1", "0 12 * * 1#1"),  # the first Monday
        ("0 0/5 * * * ?", "0/5 * * * *"),
        ("0 30 1 L * ?", "30 1 L * *"),
        ("0 0 6 1,15 * ?", "0 6 1,15 * *"),
        ("00 30 2 ? * *", "30 2 * * *"),  # seconds written "00" are still 0
    ],
)
def test_quartz_expressions_that_fit_five_fields_are_converted(quartz: str, cron: str) -> None:
    assert quartz_to_cron(quartz) == cron


@pytest.mark.parametrize(
    ("quartz", "days"),
    [
        ("0 0 12 ? * 2/2", ["Mon", "Wed", "Fri"]),
        ("0 0 12 ? * 2/3", ["Mon", "Thu"]),
        ("0 0 12 ? * 2/6", ["Mon"]),
        ("0 0 12 ? * */3", ["Sun", "Wed", "Sat"]),
    ],
)
def test_quartz_day_of_week_steps_stop_at_saturday(quartz: str, days: list[str]) -> None:
    # A week from Sunday 2026-01-04: the days the converted cron fires on.
    ticks = ticks_after(quartz_to_cron(quartz), "UTC", utc(2026, 1, 4), utc(2026, 1, 11), 10)
    assert [t.strftime("%a") for t in ticks] == days


def test_a_converted_quartz_schedule_fires_when_quartz_would() -> None:
    # Quartz "every weekday at 10:15" against the cron it became, in the job's zone.
    cron = quartz_to_cron("0 15 10 ? * 2-6")
    ticks = ticks_after(cron, "Europe/Berlin", utc(2026, 3, 13), utc(2026, 3, 21), 10)
    local = [t.astimezone(zone("Europe/Berlin")).strftime("%a %d %H:%M") for t in ticks]
    assert local == ["Fri 13 10:15", "Mon 16 10:15", "Tue 17 10:15", "Wed 18 10:15",
                     "Thu 19 10:15", "Fri 20 10:15"]  # fmt: skip


@pytest.mark.parametrize(
    ("quartz", "reason"),
    [
        ("30 0 12 * * ?", "fires on seconds"),
        ("*/10 * * * * ?", "fires on seconds"),
        ("0 0 12 * * ? 2027", "names years"),
        ("0 0 12 * *", "has 5 fields"),
        ("0 0 12 * * ? * x", "has 8 fields"),
        ("0 0 12 ? * 9", "has no five-field form"),
        ("0 0 12 ? * FOO", "has no five-field form"),
        ("0 0 12 32 * ?", "not a valid cron expression"),
    ],
)
def test_quartz_expressions_that_do_not_fit_say_why(quartz: str, reason: str) -> None:
    with pytest.raises(CronError, match=reason):
        quartz_to_cron(quartz)
