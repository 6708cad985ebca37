"""The cron and duration parsers accept exactly what Velero's Go code accepts."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from restoredrill.gosyntax import (
    GoSyntaxError,
    activation_interval,
    format_go_duration,
    next_activation,
    parse_go_duration,
    parse_velero_cron,
)


@pytest.mark.parametrize("spec", [
    "0 2 * * *", "*/15 * * * *", "0 2 * * mon-fri", "0 2 * * SUN", "0 0 1 jan,jul *", "5-10/2 * * * *",
    "0 2 ? * *", "@daily", "@midnight", "@hourly", "@weekly", "@monthly", "@yearly", "@annually",
    "@every 24h", "@every 1h30m", "CRON_TZ=Europe/Paris 0 2 * * *", "TZ=UTC 0 2 * * *",
])
def test_velero_accepts(spec: str) -> None:
    assert parse_velero_cron(spec).spec


@pytest.mark.parametrize(("spec", "message"), [
    ("", "non-empty"),
    ("0 2 * * 7", "end of range (7) above maximum (6)"),  # robfig has no 7-for-Sunday
    ("0 0 2 * * *", "expected exactly 5 fields, found 6"),  # no seconds field in ParseStandard
    ("0 2 * *", "expected exactly 5 fields, found 4"),
    ("60 2 * * *", "above maximum (59)"),
    ("0 2 0 * *", "below minimum (1)"),
    ("0 5-2 * * *", "beyond end of range"),
    ("*/0 * * * *", "step of range should be a positive number"),
    ("0 2 * * funday", "failed to parse int from funday"),
    ("1-2-3 * * * *", "too many hyphens"),
    ("@every 1d", 'unknown unit "d"'),
    ("@fortnightly", "unrecognized descriptor"),
    ("CRON_TZ=Mars/Olympus 0 2 * * *", "provided bad location"),
    ("CRON_TZ=UTC", "must be followed by a space"),
])
def test_velero_rejects(spec: str, message: str) -> None:
    with pytest.raises(GoSyntaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_velero_cron(spec)


def test_cron_fields_expand_like_robfig() -> None:
    schedule = parse_velero_cron("5-10/2 2 * * mon-fri")
    assert schedule.fields is not None
    assert schedule.fields[0] == {5, 7, 9}
    assert schedule.fields[4] == {1, 2, 3, 4, 5}
    every_20 = parse_velero_cron("3/20 * * * *")
    assert every_20.fields is not None
    assert every_20.fields[0] == {3, 23, 43}  # a/n runs to the field's maximum


@pytest.mark.parametrize(("text", "expected"), [
    ("720h0m0s", timedelta(hours=720)),
    ("720h", timedelta(hours=720)),
    ("0s", timedelta(0)),
    ("0", timedelta(0)),
    ("1.5h", timedelta(minutes=90)),
    (".5h", timedelta(minutes=30)),
    ("1h30m", timedelta(minutes=90)),
    ("-1h", timedelta(hours=-1)),
    ("300ms", timedelta(milliseconds=300)),
])
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize("text", ["30d", "720", "", "h", ".", "1hh", "1 h"])
def test_go_rejects_durations(text: str) -> None:
    with pytest.raises(GoSyntaxError):
        parse_go_duration(text)


def test_formats_like_go() -> None:
    assert format_go_duration(timedelta(hours=720)) == "720h0m0s"
    assert format_go_duration(timedelta(minutes=90)) == "1h30m0s"
    assert format_go_duration(timedelta(seconds=5)) == "5s"
    assert format_go_duration(timedelta(0)) == "0s"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("spec", "after", "expected"), [
    # robfig/cron v3 spec_test.go TestNext, in ParseStandard's five fields (seconds are 0).
    ("0/15 * * * *", "2012-07-09T14:45:00", "2012-07-09T15:00:00"),
    ("0/15 * * * *", "2012-07-09T14:59:59", "2012-07-09T15:00:00"),
    ("0/15 * * * *", "2012-07-09T23:46:00", "2012-07-10T00:00:00"),
    ("0 0 9 Apr-Oct ?", "2012-07-09T23:35:00", "2012-08-09T00:00:00"),
    ("0 0 29 Feb ?", "2012-07-09T23:35:00", "2016-02-29T00:00:00"),  # leap years only
    ("0 0 1 Jan ?", "2012-12-31T23:59:00", "2013-01-01T00:00:00"),  # wraps the year
    # Velero's usual schedules.
    ("0 2 * * *", "2026-11-26T01:59:59", "2026-11-26T02:00:00"),
    ("0 2 * * *", "2026-11-26T02:00:00", "2026-11-27T02:00:00"),  # strictly after
    ("0 2 * * *", "2026-11-26T02:00:30.5", "2026-11-27T02:00:00"),
    ("0 3 * * 1-5", "2026-11-27T03:00:00", "2026-11-30T03:00:00"),  # Friday -> Monday
    ("0 0 * * mon", "2026-11-26T00:00:00", "2026-11-30T00:00:00"),  # a starred day of month: Mondays only
    ("0 0 1 * mon", "2026-11-26T00:00:00", "2026-11-30T00:00:00"),  # neither starred: the 1st OR a Monday
    ("0 0 1 * mon", "2026-11-30T00:00:00", "2026-12-01T00:00:00"),
    ("0 0 */10 * mon", "2026-11-26T00:00:00", "2026-11-30T00:00:00"),  # */10 is not starred (step > 1)
    ("@daily", "2026-11-26T12:00:00", "2026-11-27T00:00:00"),
    ("@hourly", "2026-11-26T12:00:00", "2026-11-26T13:00:00"),
    ("@weekly", "2026-11-26T12:00:00", "2026-11-29T00:00:00"),  # Sunday
    ("@monthly", "2026-11-26T12:00:00", "2026-12-01T00:00:00"),
    ("@yearly", "2026-11-26T12:00:00", "2027-01-01T00:00:00"),
    ("@every 1h30m", "2026-11-26T10:00:00.7", "2026-11-26T11:30:00"),  # from the whole second
])
def test_next_activation_as_robfig(spec: str, after: str, expected: str) -> None:
    assert next_activation(parse_velero_cron(spec), _utc(after)) == _utc(expected)


def test_next_activation_in_a_time_zone() -> None:
    paris = parse_velero_cron("CRON_TZ=Europe/Paris 0 2 * * *")
    assert next_activation(paris, _utc("2026-11-26T00:00:00")) == _utc("2026-11-26T01:00:00")  # CET
    assert next_activation(paris, _utc("2026-06-30T23:00:00")) == _utc("2026-07-01T00:00:00")  # CEST
    # robfig's own case: 02:30 does not exist on the spring-forward day, so that year is skipped.
    new_york = ZoneInfo("America/New_York")
    skipped = parse_velero_cron("CRON_TZ=America/New_York 30 2 11 Mar ?")
    found = next_activation(skipped, datetime(2012, 3, 11, tzinfo=new_york))
    assert found == datetime(2013, 3, 11, 2, 30, tzinfo=new_york)
    assert found is not None and found.tzinfo is new_york  # in the caller's zone, as Go returns it


def test_next_activation_that_never_comes() -> None:
    assert next_activation(parse_velero_cron("0 0 30 Feb ?"), _utc("2026-01-01T00:00:00")) is None
    with pytest.raises(ValueError, match="aware"):
        next_activation(parse_velero_cron("@daily"), datetime(2026, 1, 1))


def test_activation_interval() -> None:
    weekdays = parse_velero_cron("0 3 * * 1-5")
    assert activation_interval(weekdays, _utc("2026-11-24T12:00:00")) == timedelta(days=1)
    assert activation_interval(weekdays, _utc("2026-11-27T00:00:00")) == timedelta(days=3)
    assert activation_interval(parse_velero_cron("*/15 * * * *"), _utc("2026-11-24T12:00:00")) == timedelta(
        minutes=15)
