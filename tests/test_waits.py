"""The one wait helper: how often it polls (on a fake clock: no test here depends on real time) and
what it says on a timeout."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from restoredrill import waits
from restoredrill.errors import WaitTimeout
from restoredrill.waits import POLL_INTERVAL, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waits, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def test_polls_come_quickly_then_every_half_second(clock: FakeClock) -> None:
    result = wait_until("the condition", lambda: (True if clock.now >= 2.0 else None, "not yet"), timeout=10)
    assert result is True
    assert clock.sleeps[:4] == [0.1, 0.2, 0.4, POLL_INTERVAL]
    assert set(clock.sleeps[3:]) == {POLL_INTERVAL}
    assert clock.now - 2.0 < POLL_INTERVAL  # it ended within one interval of the condition


def test_a_longer_interval_caps_the_polls_of_a_costly_probe(clock: FakeClock) -> None:
    wait_until("the costly probe", lambda: (True if clock.now >= 5.0 else None, "..."), timeout=30, interval=2.0)
    assert clock.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert set(clock.sleeps[5:]) == {2.0}


def test_a_timeout_names_what_was_awaited_and_what_was_seen_last(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout) as raised:
        wait_until("Restore r1", lambda: (None, "phase InProgress"), timeout=3, remedy="look")
    assert "Restore r1" in str(raised.value) and "phase InProgress" in str(raised.value)
    assert clock.now == pytest.approx(3.0)  # the last sleep is cut to the deadline
