"""KFP cron validation (robfig/cron v1 semantics, 6 fields, UTC) and trigger times.

`next_after` is checked against a slow, obviously-correct reference that walks forward one
second at a time and tests every field.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dultra.schedule import BadCron, parse_cron


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_fields_ranges_steps_lists_and_names():
    s = parse_cron("0,30 */15 1-5/2 ? jan-MAR,dec MON-fri")
    assert s.seconds == {0, 30}
    assert s.minutes == {0, 15, 30, 45}
    assert s.hours == {1, 3, 5}
    assert s.days_of_month == set(range(1, 32))
    assert s.months == {1, 2, 3, 12}
    assert s.days_of_week == {1, 2, 3, 4, 5}
    assert s.day_fields_and  # `?` in day-of-month: both day fields must match


def test_single_value_with_step_runs_to_the_end_of_the_range():
    assert parse_cron("0 0 20/2 * * *").hours == {20, 22}  # robfig: "a/n" = "a-max/n"


def test_whitespace_is_normalized_in_the_expression_sent():
    assert parse_cron("  0  0 3 * *\t* ").expression == "0 0 3 * * *"


@pytest.mark.parametrize("descriptor, expected", [
    ("@daily", "0 0 0 * * *"), ("@midnight", "0 0 0 * * *"), ("@hourly", "0 0 * * * *"),
    ("@weekly", "0 0 0 * * 0"), ("@monthly", "0 0 0 1 * *"), ("@yearly", "0 0 0 1 1 *"),
])
def test_descriptors(descriptor, expected):
    s = parse_cron(descriptor)
    assert s.expression == descriptor
    assert (s.seconds, s.minutes, s.hours, s.days_of_month, s.months, s.days_of_week) == \
        tuple(getattr(parse_cron(expected), f) for f in
              ("seconds", "minutes", "hours", "days_of_month", "months", "days_of_week"))


def test_every():
    s = parse_cron("@every 1h30m")
    assert s.every == timedelta(minutes=90)
    assert s.next_after(at(2030, 1, 1, 0, 0, 0)) == at(2030, 1, 1, 1, 30, 0)


def test_five_fields_are_refused_with_the_six_field_form():
    with pytest.raises(BadCron) as err:
        parse_cron("30 2 * * 1")
    message = str(err.value)
    assert "5 fields" in message and "seconds first" in message and "'0 30 2 * * 1'" in message


@pytest.mark.parametrize("expression, fragment", [
    ("", "empty"),
    ("* * * *", "has 4 fields"),
    ("0 0 0 * * * 2030", "has 7 fields"),
    ("60 0 3 * * *", "second field '60' is outside 0-59"),
    ("0 0 24 * * *", "hour field '24' is outside 0-23"),
    ("0 0 3 0 * *", "day-of-month field '0' is outside 1-31"),
    ("0 0 3 * 13 *", "month field '13' is outside 1-12"),
    ("0 0 3 * * 7", "Sunday is 0 or SUN"),
    ("0 0 3 L * *", "no L, W, #"),
    ("0 0 3 * * 5#3", "no L, W, #"),
    ("0 0 3 * * MON-", "is not a number"),
    ("0 0 3 * * *-5", "is not a number"),
    ("0 0 3-1 * * *", "ends before it starts"),
    ("0 0 */0 * * *", "positive whole step"),
    ("0 0 1/2/3 * * *", "more than one '/'"),
    ("0 0 1-2-3 * * *", "more than one '-'"),
    ("0 0 +3 * * *", "is not a number"),
    ("0 0 3 * JANUARY *", "is not a number or a name"),
    ("@fortnightly", "unknown descriptor"),
    ("@every soon", "not a Go duration"),
    ("@every 10ms", "at least 1s"),
    ("@every 99999999999999h", "longer than Go's largest duration"),
    ("@every ٣h", "not a Go duration"),
    ("0 0 ٣ * * *", "is not a number"),
    ("0 0 ² * * *", "is not a number"),
    ("0 0 */² * * *", "positive whole step"),
])
def test_invalid_crons_say_what_is_wrong(expression, fragment):
    with pytest.raises(BadCron) as err:
        parse_cron(expression)
    assert fragment in str(err.value)


def test_a_cron_that_never_fires_is_refused_only_when_now_is_given():
    parse_cron("0 0 0 31 4 *")  # syntactically fine (robfig accepts it too)
    with pytest.raises(BadCron, match="never fires"):
        parse_cron("0 0 0 31 4 *", now=at(2030, 1, 1))
    assert parse_cron("0 0 0 29 2 *", now=at(2030, 1, 1)).next_after(at(2030, 1, 1)) == at(2032, 2, 29)


@pytest.mark.parametrize("expression, after, expected", [
    ("0 0 3 * * *", at(2030, 1, 1, 3, 0, 0), at(2030, 1, 2, 3, 0, 0)),   # strictly after
    ("0 0 3 * * *", at(2030, 1, 1, 2, 59, 59), at(2030, 1, 1, 3, 0, 0)),
    ("0 0 3 * * *", at(2030, 12, 31, 4), at(2031, 1, 1, 3)),               # year wrap
    ("0 30 2 * * MON", at(2030, 1, 1), at(2030, 1, 7, 2, 30)),             # 2030-01-01 is a Tuesday
    ("0 0 0 13 * FRI", at(2030, 1, 1), at(2030, 1, 4)),                    # both restricted: 13th OR Friday
    ("0 0 0 */10 * MON", at(2030, 1, 1), at(2030, 1, 21)),               # "*/10" counts as *: 1,11,21,31 AND Monday
    ("@monthly", at(2030, 1, 31, 12), at(2030, 2, 1)),
])
def test_known_next_triggers(expression, after, expected):
    assert parse_cron(expression).next_after(after) == expected


def test_next_after_converts_other_zones_to_utc():
    tokyo = datetime(2030, 1, 1, 21, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 12:00 UTC
    assert parse_cron("0 0 13 * * *").next_after(tokyo) == at(2030, 1, 1, 13)


def reference_next(schedule, t: datetime, limit: timedelta) -> datetime | None:
    """Walk one second at a time and test each field; the slow, obvious definition."""
    t = t.replace(microsecond=0) + timedelta(seconds=1)
    end = t + limit
    while t <= end:
        dom = t.day in schedule.days_of_month
        dow = (t.weekday() + 1) % 7 in schedule.days_of_week
        day_ok = (dom and dow) if schedule.day_fields_and else (dom or dow)
        if (t.month in schedule.months and day_ok and t.hour in schedule.hours
                and t.minute in schedule.minutes and t.second in schedule.seconds):
            return t
        t += timedelta(seconds=1)
    return None


def random_field(rng: random.Random, lo: int, hi: int, star_weight: float) -> str:
    choice = rng.random()
    if choice < star_weight:
        return rng.choice(["*", "?", f"*/{rng.randint(1, 4)}"])
    a = rng.randint(lo, hi)
    if choice < star_weight + 0.3:
        return str(a)
    if choice < star_weight + 0.6:
        b = rng.randint(a, hi)
        return f"{a}-{b}" + (f"/{rng.randint(1, 3)}" if rng.random() < 0.5 else "")
    return ",".join(str(rng.randint(lo, hi)) for _ in range(rng.randint(2, 4)))


def test_next_after_matches_the_second_by_second_reference():
    rng = random.Random(0)
    checked = 0
    for _ in range(40):
        # frequent enough that the reference usually finds a trigger within a day
        fields = [random_field(rng, 0, 59, 0.2), random_field(rng, 0, 59, 0.5), random_field(rng, 0, 23, 0.6),
                  random_field(rng, 1, 31, 0.8), "*", random_field(rng, 0, 6, 0.7)]
        schedule = parse_cron(" ".join(fields))
        start = at(2030, 1, 1) + timedelta(seconds=rng.randint(0, 40 * 86400))
        expected = reference_next(schedule, start, timedelta(days=1))
        got = schedule.next_after(start)
        if expected is None:
            assert got is None or got > start + timedelta(days=1)
        else:
            assert got == expected, " ".join(fields)
            checked += 1
    assert checked >= 20  # the comparison actually exercised found triggers


def test_next_times_are_increasing_and_respect_the_count():
    times = parse_cron("0 0 */6 * * *").next_times(at(2030, 1, 1, 1), 4)
    assert times == [at(2030, 1, 1, 6), at(2030, 1, 1, 12), at(2030, 1, 1, 18), at(2030, 1, 2, 0)]
