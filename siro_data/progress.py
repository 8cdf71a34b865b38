"""What a run shows while it works: the reporter interface and its terminal face.

:func:`siro_data.fetch_all` talks to one :class:`Reporter`. The default is
:class:`TqdmProgress` (``tqdm.auto``: text bars in a terminal, widget bars in
Jupyter); :class:`siro_data.widgets.Panel` is the notebook's control panel with
a Stop button. Any object with these methods can stand in, to feed a
dashboard or a pipeline's own logging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from .rows import is_stopped, succeeded
from .widgets import Panel, in_notebook


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
        """One recording's row is final (:func:`siro_data.rows.succeeded` tells how it ended)."""

    def add_bytes(self, count: int) -> None:
        """``count`` more bytes of audio arrived."""

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
        self._bytes = tqdm(
            desc="downloaded", unit="B", unit_scale=True, unit_divisor=1024, disable=self.disable
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


def reporter_for(progress: bool | Reporter) -> Reporter:
    """The reporter ``fetch_all(progress=...)`` asks for.

    True: the notebook's :class:`siro_data.widgets.Panel` inside a Jupyter
    kernel, else :class:`TqdmProgress`; False: nothing shown; a
    :class:`Reporter`: that one.
    """
    if isinstance(progress, Reporter):
        return progress
    if progress and in_notebook():
        return Panel()
    return TqdmProgress(disable=not progress)
