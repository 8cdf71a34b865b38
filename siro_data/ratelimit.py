"""Pacing under Siro's rate limit (1000 requests per token per minute).

Siro answers 429 past its limit; a fast client spaces its calls instead of
hammering and backing off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces calls evenly so that no window of ``period`` seconds holds more than ``calls``.

    Thread-safe: every worker takes its slot from the same schedule. Anything
    with an ``acquire()`` method can stand in for it (a limiter shared between
    processes, for instance).

    Parameters
    ----------
    calls : int
        Calls allowed per ``period``.
    period : float
        Seconds of the window.
    margin : float
        Fraction of the limit kept in reserve against clock and rounding drift.

    Examples
    --------
    >>> limiter = RateLimiter(calls=600, period=60)
    >>> limiter.interval
    0.101
    >>> limiter.acquire()  # returns at once: the first slot is free
    """

    def __init__(
        self,
        calls: int = 1000,
        period: float = 60.0,
        margin: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls <= 0 or period <= 0:
            raise ValueError(f"rate limit must be positive, got {calls} calls per {period} s")
        self.interval = round(period / calls * (1 + margin), 9)
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -float("inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until this caller's slot comes."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def __repr__(self) -> str:
        return f"RateLimiter(interval={self.interval:.4f} s)"
