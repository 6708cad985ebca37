"""Named waits with one table of timeouts.

Every wait in restoredrill goes through `wait_until`, so a timeout always says what was awaited,
for how long, and the last thing observed. Its limit comes by name from the one table in
`restoredrill.timeouts`, which the drill configuration overrides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from restoredrill.errors import WaitTimeout

T = TypeVar("T")

POLL_INTERVAL = 0.5
FIRST_POLL = 0.1

def wait_until(
    what: str,
    probe: Callable[[], tuple[T | None, str]],
    *,
    timeout: float,
    interval: float = POLL_INTERVAL,
    remedy: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> T:
    """Call `probe` until it returns a value, or raise `WaitTimeout` naming `what`.

    `probe` returns `(result, observation)`: a non-None result ends the wait, and the observation
    (a short description of the current state) is reported on progress and on timeout.

    Polls come quickly at first (0.1 s, doubling) and then every `interval` seconds, so a wait ends
    within `interval` of its condition: with the default, half a second. A drill's timings then show
    the work and the controllers' own periods, not this loop's ticks. Probes that cost more than an
    API read (a command in a pod) pass a longer interval.
    """
    deadline = time.monotonic() + timeout
    last_seen = "nothing observed yet"
    last_reported = ""
    pause = min(FIRST_POLL, interval)
    while True:
        result, last_seen = probe()
        if result is not None:
            return result
        if on_progress is not None and last_seen != last_reported:
            on_progress(f"waiting for {what}: {last_seen}")
            last_reported = last_seen
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(what, seconds=timeout, last_seen=last_seen, remedy=remedy)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, interval)
