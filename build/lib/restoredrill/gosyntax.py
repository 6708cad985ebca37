"""Faithful ports of the two Go parsers that decide whether a Velero Schedule works.

Velero parses `spec.schedule` with robfig/cron v3's `ParseStandard` and every duration field
(`ttl`, hook `timeout`) with Go's `time.ParseDuration`. A policy check that used a more lenient
parser (a cron library that accepts `7` for Sunday, a `30d` duration) would pass schedules that
Velero rejects, so these follow the Go sources rule for rule and return Go's error messages.

`next_activation` ports robfig/cron v3's `SpecSchedule.Next` and `ConstantDelaySchedule.Next`:
Velero's schedule controller runs a Schedule at `Next(status.lastBackup)` (its creation time before
the first backup), so an audit can say exactly when a backup was due.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo


class GoSyntaxError(ValueError):
    """The value would be rejected by the Go parser; the message is the one Go gives."""


# ---------------------------------------------------------------------------------------------
# time.ParseDuration
# ---------------------------------------------------------------------------------------------

_UNIT_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_MAX_INT64 = (1 << 63) - 1


def parse_go_duration(text: str) -> timedelta:
    """Parse like Go's `time.ParseDuration`: "720h0m0s", "1.5h", "-30m", "0"; no "d" unit."""
    original = text
    sign = 1
    if text[:1] in ("-", "+"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        raise GoSyntaxError(f'time: invalid duration "{original}"')
    total_ns = 0
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        assert match is not None  # the pattern matches the empty string
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise GoSyntaxError(f'time: invalid duration "{original}"')
        if not unit:
            raise GoSyntaxError(f'time: missing unit in duration "{original}"')
        if unit not in _UNIT_NANOSECONDS:
            raise GoSyntaxError(f'time: unknown unit "{unit}" in duration "{original}"')
        scale = _UNIT_NANOSECONDS[unit]
        value = int(whole or "0") * scale
        if fraction:
            value += int(fraction) * scale // (10 ** len(fraction))
        total_ns += value
        if total_ns > _MAX_INT64:
            raise GoSyntaxError(f'time: invalid duration "{original}"')
        position = match.end()
    return timedelta(microseconds=sign * total_ns / 1000)


def format_go_duration(value: timedelta) -> str:
    """Render a duration the way Go's `Duration.String` does for whole seconds ("720h0m0s")."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


# ---------------------------------------------------------------------------------------------
# robfig/cron v3 ParseStandard
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTES = _Bounds(0, 59)
_HOURS = _Bounds(0, 23)
_DAY_OF_MONTH = _Bounds(1, 31)
_MONTHS = _Bounds(
    1,
    12,
    {m: i for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)},
)
_DAY_OF_WEEK = _Bounds(0, 6, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})
_FIELDS = (_MINUTES, _HOURS, _DAY_OF_MONTH, _MONTHS, _DAY_OF_WEEK)
_DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_ATOI = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule: either a descriptor/`@every` interval or five expanded fields."""

    spec: str
    timezone: str | None
    every: timedelta | None
    fields: tuple[frozenset[int], ...] | None
    # robfig's starBit: the day-of-month / day-of-week field was `*` or `?` (with no step above 1).
    # With either starred a day must match both fields, else either one (cron's OR of the two).
    day_of_month_star: bool = False
    day_of_week_star: bool = False


def parse_velero_cron(spec: str) -> CronSchedule:
    """Parse `spec` exactly as Velero's schedule controller does (robfig/cron v3 ParseStandard)."""
    if not spec:
        raise GoSyntaxError("Schedule must be a non-empty valid Cron expression")
    timezone = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space = spec.find(" ")
        if space < 0:
            # Go slices spec[eq+1:-1] and panics; Velero recovers and reports the panic.
            raise GoSyntaxError("invalid schedule: a TZ= prefix must be followed by a space and a schedule")
        timezone = spec[spec.index("=") + 1 : space]
        _load_location(timezone)
        spec = spec[space:].strip()
    if spec.startswith("@"):
        if spec in _DESCRIPTORS:
            return CronSchedule(spec=spec, timezone=timezone, every=None, fields=None)
        if spec.startswith("@every "):
            try:
                every = parse_go_duration(spec[len("@every ") :])
            except GoSyntaxError as error:
                raise GoSyntaxError(f"failed to parse duration {spec}: {error}") from None
            return CronSchedule(spec=spec, timezone=timezone, every=every, fields=None)
        raise GoSyntaxError(f"unrecognized descriptor: {spec}")
    parts = spec.split()
    if len(parts) != len(_FIELDS):
        raise GoSyntaxError(f"expected exactly 5 fields, found {len(parts)}: [{' '.join(parts)}]")
    fields = tuple(_parse_field(part, bounds) for part, bounds in zip(parts, _FIELDS, strict=True))
    return CronSchedule(spec=spec, timezone=timezone, every=None, fields=fields,
                        day_of_month_star=_starred(parts[2]), day_of_week_star=_starred(parts[4]))


def _starred(field: str) -> bool:
    """Whether robfig sets starBit on a parsed field: a `*`/`?` range whose step is not above 1."""
    for expr in (part for part in field.split(",") if part):
        range_and_step = expr.split("/")
        if range_and_step[0].split("-")[0] in ("*", "?") and (len(range_and_step) == 1 or
                                                                int(range_and_step[1]) <= 1):
            return True
    return False


def _load_location(name: str) -> None:
    if name in ("", "UTC", "Local"):
        return
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise GoSyntaxError(f"provided bad location {name}: unknown time zone {name}") from None


def _parse_field(field: str, bounds: _Bounds) -> frozenset[int]:
    values: set[int] = set()
    for expr in (part for part in field.split(",") if part):
        values |= _parse_range(expr, bounds)
    return frozenset(values)


def _parse_range(expr: str, bounds: _Bounds) -> set[int]:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    if low_and_high[0] in ("*", "?"):
        start, end = bounds.low, bounds.high
    else:
        start = _int_or_name(low_and_high[0], bounds.names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], bounds.names)
        else:
            raise GoSyntaxError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if len(low_and_high) == 1:
            end = bounds.high
    else:
        raise GoSyntaxError(f"too many slashes: {expr}")
    if start < bounds.low:
        raise GoSyntaxError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise GoSyntaxError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise GoSyntaxError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise GoSyntaxError(f"step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step))


def _int_or_name(expr: str, names: dict[str, int] | None) -> int:
    if names is not None and expr.lower() in names:
        return names[expr.lower()]
    return _atoi(expr)


def _atoi(expr: str) -> int:
    if not _ATOI.fullmatch(expr):
        raise GoSyntaxError(f'failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": invalid syntax')
    number = int(expr)
    if number < 0:
        raise GoSyntaxError(f"negative number ({number}) not allowed: {expr}")
    return number


# ---------------------------------------------------------------------------------------------
# robfig/cron v3 Schedule.Next
# ---------------------------------------------------------------------------------------------

_ALL_MINUTES = frozenset(range(60))
_ALL_HOURS = frozenset(range(24))
_ALL_DAYS = frozenset(range(1, 32))
_ALL_MONTHS = frozenset(range(1, 13))
_ALL_WEEKDAYS = frozenset(range(7))
# parseDescriptor: (minute, hour, day of month, month, day of week, dom starred, dow starred).
_DESCRIPTOR_FIELDS: dict[str, tuple[tuple[frozenset[int], ...], bool, bool]] = {
    "@yearly": ((frozenset({0}), frozenset({0}), frozenset({1}), frozenset({1}), _ALL_WEEKDAYS), False, True),
    "@monthly": ((frozenset({0}), frozenset({0}), frozenset({1}), _ALL_MONTHS, _ALL_WEEKDAYS), False, True),
    "@weekly": ((frozenset({0}), frozenset({0}), _ALL_DAYS, _ALL_MONTHS, frozenset({0})), True, False),
    "@daily": ((frozenset({0}), frozenset({0}), _ALL_DAYS, _ALL_MONTHS, _ALL_WEEKDAYS), True, True),
    "@hourly": ((frozenset({0}), _ALL_HOURS, _ALL_DAYS, _ALL_MONTHS, _ALL_WEEKDAYS), True, True),
}
_DESCRIPTOR_FIELDS["@annually"] = _DESCRIPTOR_FIELDS["@yearly"]
_DESCRIPTOR_FIELDS["@midnight"] = _DESCRIPTOR_FIELDS["@daily"]


def next_activation(schedule: CronSchedule, after: datetime) -> datetime | None:
    """The first time after `after` (an aware datetime) at which robfig/cron fires `schedule`, as
    `Schedule.Next` computes it; None where robfig gives the zero time (nothing within five years).

    A schedule with no TZ= prefix runs in the Velero server's local zone, UTC in its image. In a
    daylight-saving gap or overlap a wall time resolves as zoneinfo's fold=0 does (the offset before
    the change), which is also what Go's time.Date does for a gap.
    """
    if after.tzinfo is None:
        raise ValueError("next_activation needs an aware datetime")
    if schedule.every is not None:
        # ConstantDelaySchedule: the delay (at least 1s, whole seconds), from t's whole second.
        delay = max(timedelta(seconds=int(schedule.every.total_seconds())), timedelta(seconds=1))
        return after.replace(microsecond=0) + delay
    if schedule.fields is not None:
        fields, dom_star, dow_star = schedule.fields, schedule.day_of_month_star, schedule.day_of_week_star
    else:
        fields, dom_star, dow_star = _DESCRIPTOR_FIELDS[schedule.spec.split()[-1]]
    minutes, hours, days, months, weekdays = fields
    zone: tzinfo = UTC if schedule.timezone in (None, "", "UTC", "Local") else zoneinfo.ZoneInfo(
        str(schedule.timezone))

    def day_matches(t: datetime) -> bool:
        dom, dow = t.day in days, (t.isoweekday() % 7) in weekdays
        return (dom and dow) if (dom_star or dow_star) else (dom or dow)

    def wall(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
        # time.Date in the schedule's zone: normalise through UTC so a gap time moves forward.
        return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC).astimezone(zone)

    def plus(t: datetime, delta: timedelta) -> datetime:
        # time.Add: absolute time, not wall-clock arithmetic.
        return (t.astimezone(UTC) + delta).astimezone(zone)

    # The earliest possible time: the upcoming whole second (seconds are always 0 in ParseStandard).
    t = plus(after.astimezone(zone).replace(microsecond=0), timedelta(seconds=1))
    added = False
    year_limit = t.year + 5
    while True:  # robfig's `goto WRAP`
        if t.year > year_limit:
            return None
        wrapped = False
        while t.month not in months:
            if not added:
                added = True
                t = wall(t.year, t.month, 1)
            t = wall(t.year + t.month // 12, t.month % 12 + 1, 1, t.hour, t.minute)  # AddDate(0, 1, 0)
            if t.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not day_matches(t):
            if not added:
                added = True
                t = wall(t.year, t.month, t.day)
            following = t.date() + timedelta(days=1)  # AddDate(0, 0, 1)
            t = wall(following.year, following.month, following.day, t.hour, t.minute)
            if t.hour != 0:  # daylight saving moved midnight
                t = plus(t, timedelta(hours=24 - t.hour) if t.hour > 12 else timedelta(hours=-t.hour))
            if t.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while t.hour not in hours:
            if not added:
                added = True
                t = wall(t.year, t.month, t.day, t.hour)
            t = plus(t, timedelta(hours=1))
            if t.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while t.minute not in minutes:
            if not added:
                added = True
                t = t.replace(second=0)
            t = plus(t, timedelta(minutes=1))
            if t.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while t.second != 0:
            if not added:
                added = True
            t = plus(t, timedelta(seconds=1))
            if t.second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return t.astimezone(after.tzinfo)


def activation_interval(schedule: CronSchedule, at: datetime) -> timedelta | None:
    """The gap between the two activations that follow `at`: the Schedule's interval there (for
    `0 3 * * 1-5` a day midweek, three days over a weekend)."""
    first = next_activation(schedule, at)
    second = next_activation(schedule, first) if first is not None else None
    return None if first is None or second is None else second - first
