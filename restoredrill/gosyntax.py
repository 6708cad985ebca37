"""Faithful ports of the two Go parsers that decide whether a Velero Schedule works.

Velero parses `spec.schedule` with robfig/cron v3's `ParseStandard` and every duration field
(`ttl`, hook `timeout`) with Go's `time.ParseDuration`. A policy check that used a more lenient
parser (a cron library that accepts `7` for Sunday, a `30d` duration) would pass schedules that
Velero rejects, so these follow the Go sources rule for rule and return Go's error messages.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta


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
    return CronSchedule(spec=spec, timezone=timezone, every=None, fields=fields)


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
