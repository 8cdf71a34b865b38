"""What a run shows while it works: the reporter interface, its faces, and the choice of one.

:func:`siro_data.fetch_all` talks to one :class:`Reporter`, chosen by its
``progress`` argument (:func:`reporter_for`):

- ``"auto"`` (or True): the notebook's control panel with a Stop button
  (:class:`siro_data.widgets.Panel`) inside Jupyter; tqdm bars
  (:class:`TqdmProgress`) when stderr is a terminal; otherwise (cron, Airflow,
  CI: stderr is a file or a pipe) one plain log line every interval
  (:class:`LogProgress`);
- ``"bars"``, ``"log"``: that face, wherever the run is;
- ``"none"`` (or False): nothing shown;
- any :class:`Reporter`: that one, to feed a dashboard or your own logging.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any, Literal, Protocol, runtime_checkable

from tqdm.auto import tqdm

from .rows import is_stopped, succeeded
from .summary import duration_text, megabytes
from .tally import Tally, ending
from .widgets import Panel, in_notebook

#: What ``progress=`` accepts besides a :class:`Reporter`.
ProgressChoice = Literal["auto", "bars", "log", "none"]
CHOICES: tuple[str, ...] = ("auto", "bars", "log", "none")
#: Seconds between two progress lines of :class:`LogProgress`.
LOG_INTERVAL_SECONDS = 10.0

log = logging.getLogger(__name__)


@runtime_checkable
class Reporter(Protocol):
    """Receives a run's events. ``finished`` and ``poll`` come from the calling thread,
    ``add_bytes`` from worker threads.
    """

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        """The run begins: ``total`` recordings, ``done`` already complete.

        Calling ``stop()`` ends the run cleanly: downloads in flight keep their
        bytes as partial files, the manifest is saved, and ``fetch_all`` returns.
        """

    def finished(self, row: Mapping[str, Any]) -> None:
        """One recording's row is final (its ``status`` tells how it ended)."""

    def add_bytes(self, count: int) -> None:
        """``count`` more bytes of audio arrived."""

    # Optional, called when present: ``expect_bytes(count)``, from worker threads, when a
    # download begins and storage says how many bytes are to come (an ETA's input).

    def poll(self) -> None:
        """Called a few times a second while waiting: a place to handle UI events."""

    def close(self) -> None:
        """The run is over."""


class TqdmProgress:
    """Two ``tqdm.auto`` bars: recordings (with failures counted) and bytes received.

    Examples
    --------
    >>> bars = TqdmProgress(disable=True)
    >>> bars.start(total=3, done=1, stop=lambda: None)
    >>> bars.finished({"recording_id": "a", "error": "404: Recording not found"})
    >>> bars.failed
    1
    >>> bars.close()
    """

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.failed = 0
        self._lock = threading.Lock()
        self._recordings: tqdm | None = None
        self._bytes: tqdm | None = None

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        self._recordings = tqdm(
            total=total, initial=done, desc="recordings", unit="rec", disable=self.disable
        )
        self._bytes = tqdm(  # MB of 1,000,000 bytes, as the panel and summarize count them
            desc="downloaded", unit="B", unit_scale=True, unit_divisor=1000, disable=self.disable
        )

    def finished(self, row: Mapping[str, Any]) -> None:
        if is_stopped(row):  # not reached: the bar stays where it stopped
            return
        with self._lock:
            if not succeeded(row):
                self.failed += 1
                self._recordings.set_postfix(failed=self.failed, refresh=False)
            self._recordings.update(1)

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self._bytes.update(count)

    def poll(self) -> None:
        """Nothing to do: a terminal has no buttons."""

    def close(self) -> None:
        for bar in (self._recordings, self._bytes):
            if bar is not None:
                bar.close()


class LogProgress:
    """Progress for pipelines: one plain log line every ``interval`` seconds, no control characters.

    Lines go to the ``siro_data.progress`` logger at INFO: a line when the run
    starts, one every ``interval`` seconds (done, failed, stopped, remaining,
    MB received, MB/s, ETA), and one when it ends (how, in how long, where the
    manifest is). When logging is not configured at all (no handler anywhere),
    the lines go to stderr for the length of the run, so that a plain script
    still shows them.

    Parameters
    ----------
    interval : float
        Seconds between two progress lines.
    manifest_path : path-like, optional
        Named in the last line (``fetch_all`` passes its own).
    action : str
        What the first line says the run is doing (``verify`` says "checking").

    Examples
    --------
    >>> import logging, sys
    >>> shown = logging.StreamHandler(sys.stdout)
    >>> logging.getLogger("siro_data.progress").addHandler(shown)
    >>> logging.getLogger("siro_data.progress").setLevel(logging.INFO)
    >>> reporter = LogProgress(interval=0)
    >>> reporter.start(total=3, done=1, stop=lambda: None)
    fetching 3 recordings (1 already complete)
    >>> reporter.finished({"recording_id": "a", "error": "404: Recording not found"})
    >>> reporter.poll()
    1 done, 1 failed, 0 stopped, 1 remaining; 0.0 MB received, 0.0 MB/s, ETA unknown
    >>> reporter.close()
    done in 0 s: 1 done, 1 failed, 0 stopped, 1 remaining; 0.0 MB received
    >>> logging.getLogger("siro_data.progress").removeHandler(shown)
    >>> logging.getLogger("siro_data.progress").setLevel(logging.NOTSET)
    """

    def __init__(
        self,
        interval: float = LOG_INTERVAL_SECONDS,
        manifest_path: str | os.PathLike | None = None,
        action: str = "fetching",
    ) -> None:
        self.interval = interval
        self.manifest_path = manifest_path
        self.action = action
        self._tally = Tally()
        self._next_line = 0.0
        self._fallback: logging.Handler | None = None

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        now = monotonic()
        self._tally.start(total, done, now)
        self._next_line = now + self.interval
        if not log.hasHandlers():  # nothing configured: stderr, for this run only
            self._fallback = logging.StreamHandler(sys.stderr)
            self._fallback.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
            log.addHandler(self._fallback)
            self._level = log.level
            log.setLevel(logging.INFO)
        log.info("%s %d recordings (%d already complete)", self.action, total, done)

    def finished(self, row: Mapping[str, Any]) -> None:
        self._tally.finished(row)

    def add_bytes(self, count: int) -> None:
        self._tally.add_bytes(count)

    def expect_bytes(self, count: int) -> None:
        self._tally.expect_bytes(count)

    def poll(self) -> None:
        """A line when ``interval`` seconds have passed since the last one."""
        now = monotonic()
        if now < self._next_line:
            return
        self._next_line = now + self.interval
        tally = self._tally
        log.info(
            "%s; %s, %s/s, %s",
            tally.counts(),
            tally.received(),
            megabytes(tally.rate(now)),
            tally.eta_text(now),
        )

    def close(self) -> None:
        tally = self._tally
        how = ending() or ("stopped" if tally.stopped else "done")
        took = duration_text(tally.elapsed(monotonic()))
        where = f"; manifest: {self.manifest_path}" if self.manifest_path is not None else ""
        log.info("%s in %s: %s; %s%s", how, took, tally.counts(), tally.received(), where)
        if self._fallback is not None:
            log.removeHandler(self._fallback)
            log.setLevel(self._level)
            self._fallback = None


def reporter_for(
    progress: bool | ProgressChoice | Reporter = "auto",
    manifest_path: str | os.PathLike | None = None,
) -> Reporter:
    """The reporter ``fetch_all(progress=...)`` asks for.

    ``"auto"`` or True: the notebook's :class:`siro_data.widgets.Panel` inside
    a Jupyter kernel, :class:`TqdmProgress` when stderr is a terminal, else
    :class:`LogProgress`; ``"bars"``: :class:`TqdmProgress`; ``"log"``:
    :class:`LogProgress`; ``"none"`` or False: nothing shown; a
    :class:`Reporter`: that one. ``manifest_path`` is named in what the panel
    and the log leave when the run is over.

    Examples
    --------
    >>> type(reporter_for("log")).__name__, type(reporter_for(False)).__name__
    ('LogProgress', 'TqdmProgress')
    >>> reporter_for("loud")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: progress must be one of 'auto', 'bars', 'log', 'none', ...; got 'loud'
    """
    if isinstance(progress, Reporter):
        return progress
    choice = "auto" if progress is True else "none" if progress is False else progress
    if not isinstance(choice, str) or choice not in CHOICES:
        allowed = ", ".join(repr(name) for name in CHOICES)
        raise ValueError(
            f"progress must be one of {allowed}, True, False or a Reporter; got {progress!r}"
        )
    if choice == "auto":
        if in_notebook():
            return Panel(manifest_path=manifest_path)
        choice = "bars" if _stderr_is_a_terminal() else "log"
    if choice == "log":
        return LogProgress(manifest_path=manifest_path)
    return TqdmProgress(disable=choice == "none")


def _stderr_is_a_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False
