"""RateLimiter on a fake clock: never over the limit, no banked idle time, a slot per thread."""

from __future__ import annotations

import bisect
import sys
import threading

import pytest

from siro_data import RateLimiter


class _FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("calls", "period"), [(10, 1.0), (1000, 60.0), (3, 7.5)])
def test_rate_limiter_never_exceeds_calls_per_period(calls: int, period: float) -> None:
    """No window of ``period`` seconds (closed at both ends) holds more than ``calls``."""
    fake = _FakeTime()
    limiter = RateLimiter(calls, period, clock=fake.clock, sleep=fake.sleep)
    assert limiter.interval == pytest.approx(period / calls * 1.01)
    times = []
    for _ in range(calls * 3):
        limiter.acquire()
        times.append(fake.now)
    assert fake.sleeps[0] == pytest.approx(limiter.interval)  # the first call did not sleep
    assert len(fake.sleeps) == calls * 3 - 1
    # calls in the closed window [t, t + period] starting at each call
    in_window = [bisect.bisect_right(times, t + period) - i for i, t in enumerate(times)]
    assert max(in_window) <= calls
    # ...while using the budget: only the 1 % margin is kept in reserve
    assert max(in_window) >= int(calls / 1.01)


def test_rate_limiter_idle_time_is_not_banked() -> None:
    """After a pause the next call is immediate, but later calls are spaced again."""
    fake = _FakeTime()
    limiter = RateLimiter(10, 1.0, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire()
    fake.now += 100
    limiter.acquire()
    assert fake.sleeps == []
    limiter.acquire()
    assert fake.sleeps == [pytest.approx(0.101)]


def test_rate_limiter_gives_each_thread_its_own_slot() -> None:
    """16 threads x 200 calls at once get 3200 distinct slots, one interval apart."""
    now = 50.0
    sleeps: list[float] = []
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            sleeps.append(seconds)

    limiter = RateLimiter(100, 1.0, clock=lambda: now, sleep=sleep)
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(200):
            limiter.acquire()

    # Switch threads as often as possible, so that an unlocked read-modify-write would show.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert sorted(round(s / limiter.interval) for s in sleeps) == list(range(1, 3200))


def test_rate_limiter_rejects_non_positive_limits() -> None:
    """A zero or negative limit is a ValueError, not a division error or a busy loop."""
    with pytest.raises(ValueError, match="rate limit must be positive"):
        RateLimiter(0, 60)
    with pytest.raises(ValueError, match="rate limit must be positive"):
        RateLimiter(10, 0)
