"""The cron and duration parsers accept exactly what Velero's Go code accepts."""

from datetime import timedelta

import pytest

from restoredrill.gosyntax import GoSyntaxError, format_go_duration, parse_go_duration, parse_velero_cron


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
