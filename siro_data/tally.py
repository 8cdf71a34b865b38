"""A run's counts as it goes: done, failed, stopped, bytes, rate and time left.

The notebook's panel (:class:`siro_data.widgets.Panel`) and the pipeline's log
lines (:class:`siro_data.progress.LogProgress`) show the same numbers, counted
here once. Time is passed in by the caller (``now``, from ``time.monotonic``),
so each face keeps its own clock.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from .rows import Status, status_of
from .summary import duration_text, megabytes

#: The transfer rate shown is the average over this many recent seconds.
RATE_WINDOW_SECONDS = 5.0


class Tally:
    """Counts of one run, safe to update from worker threads.

    The ETA is the bytes still to come at the rate bytes arrived since the
    start. The bytes to come are what the downloads under way still expect
    (storage announced their sizes: :meth:`expect_bytes`) plus, for the
    recordings not started yet, the mean size of the downloads started so
    far; without announced sizes, every recording not finished counts at the
    mean size of those downloaded. Rows that fail in a tenth of a second (a
    403, a missing id) change neither the bytes nor the rate, so they do not
    make the estimate shrink.

    Examples
    --------
    >>> tally = Tally()
    >>> tally.start(total=10, done=0, now=0.0)
    >>> for n in range(8):  # fast failures
    ...     _ = tally.finished({"recording_id": n, "error": "403: Forbidden"})
    >>> tally.add_bytes(2_000_000)
    >>> tally.finished({"recording_id": "a", "error": None, "size_bytes": 1_000_000})
    'ok'
    >>> tally.eta(now=10.0)  # 1 left, 1 MB each, 0.2 MB/s
    5.0
    >>> tally.counts()
    '1 done, 8 failed, 0 stopped, 1 remaining'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.start(total=0, done=0, now=0.0)

    def start(self, total: int, done: int, now: float) -> None:
        """A run of ``total`` recordings begins, ``done`` of them already complete."""
        with self._lock:
            self.total = total
            self.done = done
            self.failed = 0
            self.stopped = 0
            self.bytes_received = 0
            self.started = now
            self._downloaded = 0  # ok rows finished in this run ...
            self._downloaded_bytes = 0  # ... and their sizes
            self._started_downloads = 0  # downloads whose size storage announced ...
            self._expected = 0  # ... and the bytes they were to bring
            self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    def finished(self, row: Mapping[str, Any]) -> str:
        """Count one final row; its status (``ok``, ``failed`` or ``stopped``)."""
        status = status_of(row)
        with self._lock:
            if status == Status.OK:
                self.done += 1
                size = row.get("size_bytes")
                if isinstance(size, int | float) and size == size:  # not NaN
                    self._downloaded += 1
                    self._downloaded_bytes += int(size)
            elif status == Status.STOPPED:
                self.stopped += 1
            else:
                self.failed += 1
        return status

    def add_bytes(self, count: int) -> None:
        """``count`` more bytes of audio arrived."""
        with self._lock:
            self.bytes_received += count

    def expect_bytes(self, count: int) -> None:
        """A download began; storage says ``count`` more bytes are to come."""
        with self._lock:
            self._started_downloads += 1
            self._expected += count

    @property
    def remaining(self) -> int:
        """Recordings not finished in any way yet (neither done, failed nor stopped)."""
        return max(self.total - self.done - self.failed - self.stopped, 0)

    def elapsed(self, now: float) -> float:
        """Seconds since the start."""
        return max(now - self.started, 0.0)

    def rate(self, now: float) -> float:
        """Bytes per second over the last ``RATE_WINDOW_SECONDS``."""
        with self._lock:
            samples = self._samples
            samples.append((now, self.bytes_received))
            while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW_SECONDS:
                samples.popleft()
            (then, before), (_, latest) = samples[0], samples[-1]
        return (latest - before) / (now - then) if now > then else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left, or None while unknown (no download complete, nothing received)."""
        with self._lock:
            left = self.remaining
            if not left:
                return 0.0
            elapsed = now - self.started
            if not self.bytes_received or elapsed <= 0:
                return None
            if self._started_downloads:
                under_way = min(max(self._started_downloads - self._downloaded, 0), left)
                mean = self._expected / self._started_downloads
                to_come = max(self._expected - self.bytes_received, 0) + (left - under_way) * mean
            elif self._downloaded:
                to_come = left * self._downloaded_bytes / self._downloaded
            else:
                return None
            return to_come / (self.bytes_received / elapsed)

    def eta_text(self, now: float) -> str:
        """``ETA 1 min 05 s``, ``ETA < 1 s`` while some are left, or ``ETA unknown``."""
        seconds = self.eta(now)
        if seconds is None:
            return "ETA unknown"
        if 0 < seconds < 0.5:
            return "ETA < 1 s"
        return f"ETA {duration_text(seconds)}"

    def counts(self, sep: str = ", ", every: bool = True) -> str:
        """``3 done, 1 failed, 0 stopped, 8 remaining``; ``every=False`` leaves out "0 stopped"."""
        parts = [f"{self.done} done", f"{self.failed} failed"]
        if every or self.stopped:
            parts.append(f"{self.stopped} stopped")
        parts.append(f"{self.remaining} remaining")
        return sep.join(parts)

    def received(self) -> str:
        """``12.3 MB received``."""
        return f"{megabytes(self.bytes_received)} received"


def ending() -> str | None:
    """How the run ends when its reporter is closed while an exception is on its way out.

    ``"interrupted"`` for a ``KeyboardInterrupt`` (the kernel's interrupt,
    Ctrl-C), ``"ended early"`` for any other error (a rejected token, a full
    disk), None when the run ended normally (``fetch_all`` returns).
    """
    error = sys.exc_info()[1]
    if error is None:
        return None
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "ended early"
