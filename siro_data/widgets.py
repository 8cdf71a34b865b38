"""The notebook's control panel for :func:`siro_data.fetch_all`: progress, errors, a Stop button.

:class:`Panel` is a :class:`siro_data.progress.Reporter` made of ipywidgets.
``fetch_all`` uses it inside a Jupyter kernel (``progress="auto"``, the
default); pass ``progress=Panel()`` to choose it explicitly. When the run is
over it leaves its record, a plain text and HTML summary, in the widget's place.

While ``fetch_all`` runs, the notebook cell is busy and the kernel reads no
message from the browser, the Stop button's click included, until the cell
ends. So :meth:`Panel.poll`, which ``fetch_all`` calls a few times a second
from the cell's own thread, takes the clicks on its Stop button out of the
kernel's queue itself (:func:`deliver_clicks`); every other message is handed
back to the kernel, in order, to be handled when the cell is over.
"""

from __future__ import annotations

import html
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

import ipywidgets as widgets

from .rows import Status
from .summary import counts_line, duration_text, megabytes
from .tally import Tally, ending

log = logging.getLogger(__name__)

#: Least seconds between two refreshes of the panel: no widget message per chunk or per row.
REFRESH_SECONDS = 0.2
#: Failed rows listed in the errors table (the latest); earlier ones are counted.
MAX_ERRORS_SHOWN = 50
#: Characters of an error message shown in the table.
MAX_MESSAGE_CHARS = 500
#: Messages taken from the kernel's queue in one poll, at most.
MAX_MESSAGES_PER_POLL = 100


class Panel:
    """ipywidgets panel for a run: counts, bytes and rate, ETA, errors as they come, Stop.

    It shows itself when the run starts. Clicking Stop ends the run cleanly:
    downloads in flight keep their bytes as partial files, the manifest is
    saved and ``fetch_all`` returns the rows so far (the others are "stopped";
    run again to resume). When the run is over, the panel gives way to its
    :attr:`record`: the final summary as plain text and HTML, which a saved
    notebook keeps and shows when reopened, rendered on GitHub or exported.

    Parameters
    ----------
    max_errors : int
        Failed rows listed in the errors table: the latest ones; the rest are counted.
    manifest_path : path-like, optional
        Where the run saves its manifest, named in the record
        (``fetch_all`` passes its own).

    Attributes
    ----------
    progress : ipywidgets.IntProgress
        Recordings finished (ok or failed, earlier runs' included) out of all.
    summary : ipywidgets.HTML
        State, counts, megabytes received, recent rate, estimated time left.
    errors : ipywidgets.HTML
        The failed rows: id, kind and message (escaped: messages come from servers).
    stop_button : ipywidgets.Button
        Calls the run's stop function, once.
    widget : ipywidgets.VBox
        All of the above, as displayed.

    Examples
    --------
    >>> panel = Panel(manifest_path="data/manifest.parquet")
    >>> panel.start(total=3, done=1, stop=lambda: None)
    >>> panel.add_bytes(2_500_000)
    >>> panel.finished({"recording_id": "a", "error": None})
    >>> panel.finished({"recording_id": "b", "error": "404: <Recording> not found",
    ...                 "error_kind": "not_found"})
    >>> panel.close()
    >>> panel.progress.value, panel.progress.max
    (3, 3)
    >>> panel.status
    'done'
    >>> "&lt;Recording&gt; not found" in panel.errors.value
    True
    >>> print(panel.record()["text/plain"])  # doctest: +ELLIPSIS
    siro_data.fetch_all: done
    3 recordings: 2 ok, 1 failed
    2.5 MB received in 0 s
    manifest: data/manifest.parquet
    errors (1):
      b  not_found  404: <Recording> not found
    """

    def __init__(self, max_errors: int = MAX_ERRORS_SHOWN, manifest_path: Any = None) -> None:
        self.max_errors = max_errors
        self.manifest_path = manifest_path
        self.progress = widgets.IntProgress(
            value=0, min=0, max=0, description="recordings", style={"description_width": "initial"}
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            tooltip="End the run cleanly: the manifest is saved; run again to resume",
        )
        self.stop_button.on_click(self._on_stop_click)
        self.summary = widgets.HTML()
        self.errors = widgets.HTML(layout=widgets.Layout(max_height="20em", overflow="auto"))
        self.widget = widgets.VBox(
            [widgets.HBox([self.progress, self.stop_button]), self.summary, self.errors]
        )
        self._lock = threading.Lock()
        self._tally = Tally()
        self._shown: Any = None  # the display handle, in a notebook
        self._reset(total=0, done=0, stop=None)

    # -- the Reporter interface ---------------------------------------------------------------

    def start(self, total: int, done: int, stop: Callable[[], None]) -> None:
        """Show the panel for a run of ``total`` recordings, ``done`` of them already complete."""
        self._reset(total, done, stop)
        self.stop_button.disabled = False
        self.stop_button.description = "Stop"
        self.stop_button.icon = "stop"
        self.stop_button.button_style = "danger"
        self.progress.bar_style = ""
        self._refresh(force=True)
        if in_notebook():
            from IPython.display import display

            self._shown = display(self.widget, display_id=True)

    def finished(self, row: Mapping[str, Any]) -> None:
        """Count one final row; a failed one joins the errors table."""
        if self._tally.finished(row) == Status.FAILED:
            with self._lock:
                self._errors.append(
                    (row.get("recording_id"), row.get("error_kind"), str(row["error"]))
                )
                self._errors_changed = True
        self._refresh()

    def add_bytes(self, count: int) -> None:
        """Count bytes received (from worker threads: no widget message is sent here)."""
        self._tally.add_bytes(count)

    def expect_bytes(self, count: int) -> None:
        """A download began with ``count`` bytes to come: for the ETA (from worker threads)."""
        self._tally.expect_bytes(count)

    def poll(self) -> None:
        """Hear a click on Stop that waits in the kernel's queue, and refresh the panel."""
        clicks = deliver_clicks(self.stop_button)
        if clicks:
            log.debug("Stop clicked while the cell ran (%d clicks)", clicks)
        self._refresh()

    def close(self) -> None:
        """Show the final state, then give the panel's place to its :meth:`record`.

        Called while an exception is on its way out of the run (a kernel
        interrupt, a rejected token), the state says so.
        """
        how = ending()
        with self._lock:
            self._closed = True
            self._ending = how
            self._finished_at = monotonic()
        self._refresh(force=True)
        status = self.status
        button = self.stop_button
        button.disabled = True
        button.button_style = ""  # no longer the red button of a live run
        button.icon = "check" if status == "done" else ""
        button.description = status.split(":")[0]  # done, stopped, interrupted, ended early
        clean = status == "done" and not self.failed
        self.progress.bar_style = "success" if clean else "warning"
        if self._shown is not None:
            self._shown.update(self.record(), raw=True)
            self._shown = None

    # -- what it shows ------------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Recordings complete, including those an earlier run completed."""
        return self._tally.done

    @property
    def failed(self) -> int:
        """Recordings that failed (those a stop left out are not counted)."""
        return self._tally.failed

    @property
    def stopped(self) -> int:
        """Recordings a stopped run did not reach."""
        return self._tally.stopped

    @property
    def remaining(self) -> int:
        """Recordings not finished in any way yet (neither done, failed nor stopped)."""
        return self._tally.remaining

    @property
    def bytes_received(self) -> int:
        """Bytes of audio received in this run."""
        return self._tally.bytes_received

    @property
    def status(self) -> str:
        """``running``, ``stopping…``, ``done``, or how the run ended and what it left to do."""
        with self._lock:
            return self._status()

    def record(self) -> dict[str, str]:
        """The final summary as a display bundle: ``text/plain`` and ``text/html``.

        What the panel leaves in the notebook when the run is over: state and
        time, counts, bytes, where the manifest is, and the errors.
        """
        tally = self._tally
        with self._lock:
            status = self._status()
            took = duration_text(tally.elapsed(self._finished_at))
            errors = list(self._errors)
        lines = [
            f"siro_data.fetch_all: {status}",
            counts_line(tally.total, tally.done, tally.failed, tally.stopped),
            f"{tally.received()} in {took}",
        ]
        if self.manifest_path is not None:
            lines.append(f"manifest: {self.manifest_path}")
        text = "\n".join(lines)
        page = "<br>".join(
            [f"<b>{html.escape(lines[0])}</b>", *(html.escape(line) for line in lines[1:])]
        )
        if errors:
            earlier = tally.failed - len(errors)
            text += f"\nerrors ({tally.failed}):" + "".join(
                f"\n  {recording_id}  {kind}  {_shorten(message)}"
                for recording_id, kind, message in errors
            )
            if earlier > 0:
                text += f"\n  ({earlier} earlier errors not shown)"
            page += self._errors_html(errors)
        return {"text/plain": text, "text/html": f"<div class='siro-data-record'>{page}</div>"}

    def _status(self) -> str:
        tally = self._tally
        left = tally.remaining + tally.stopped
        if not self._closed:
            return "stopping…" if self._stopping else "running"
        if not left:
            return "done"
        if self._ending == "interrupted":
            return f"interrupted: {left} not fetched — run again to resume"
        if self._stopping or tally.stopped:
            return f"stopped: {left} not fetched — run again to resume"
        return f"ended early: {left} not fetched — run again to resume"

    def _reset(self, total: int, done: int, stop: Callable[[], None] | None) -> None:
        now = monotonic()
        self._tally.start(total, done, now)
        with self._lock:
            self._stop = stop
            self._stopping = False
            self._closed = False
            self._ending: str | None = None
            self._finished_at = now
            self._errors: deque[tuple[Any, Any, str]] = deque(maxlen=self.max_errors)
            self._errors_changed = True
            self._last_refresh = float("-inf")

    def _refresh(self, force: bool = False) -> None:
        """Bring the widgets up to date, at most every ``REFRESH_SECONDS`` unless forced."""
        now = monotonic()
        with self._lock:
            if not force and now - self._last_refresh < REFRESH_SECONDS:
                return
            self._last_refresh = now
            summary = self._summary(now)
            errors = self._errors_html(self._errors) if self._errors_changed else None
            self._errors_changed = False
        tally = self._tally
        value = tally.done + tally.failed
        self.progress.max = max(tally.total, value)
        self.progress.value = value
        self.summary.value = summary
        if errors is not None:
            self.errors.value = errors

    def _summary(self, now: float) -> str:
        """The summary line (HTML); called under the lock."""
        tally = self._tally
        parts = [
            f"<b>{html.escape(self._status())}</b>",
            tally.counts(" · ", every=False),
            tally.received(),
        ]
        if not self._closed:
            parts.append(f"{megabytes(tally.rate(now))}/s")
            if not self._stopping:
                parts.append(tally.eta_text(now))
        else:
            parts.append(f"in {duration_text(tally.elapsed(now))}")
        return " · ".join(parts)

    def _errors_html(self, errors: Any) -> str:
        """The errors table (HTML, every value escaped)."""
        if not errors:
            return ""
        earlier = self._tally.failed - len(errors)
        cell = "padding:0 0.8em 0 0;text-align:left;vertical-align:top"
        rows = "".join(
            f"<tr><td style='{cell}'>{_text(recording_id)}</td>"
            f"<td style='{cell}'>{_text(kind)}</td>"
            f"<td style='{cell}'>{_text(_shorten(message))}</td></tr>"
            for recording_id, kind, message in errors
        )
        head = "".join(f"<th style='{cell}'>{name}</th>" for name in ("recording", "kind", "error"))
        note = f"<div>{earlier} earlier errors not shown</div>" if earlier > 0 else ""
        return (
            f"<div><b>errors ({self._tally.failed})</b></div>{note}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )

    # -- Stop ---------------------------------------------------------------------------------

    def _on_stop_click(self, _button: widgets.Button | None = None) -> None:
        with self._lock:
            if self._stop is None or self._stopping or self._closed:
                return
            self._stopping = True
            stop = self._stop
        log.info("Stop clicked: the run ends after the downloads in flight")
        stop()
        self.stop_button.disabled = True
        self.stop_button.description = "stopping…"
        self._refresh(force=True)


def deliver_clicks(button: widgets.Button) -> int:
    """Click ``button`` for each click the browser sent that waits in the kernel's queue.

    A busy cell keeps the kernel from reading its shell channel, so a click
    reaches the widget only when the cell ends. Called from the cell's thread
    while it works, this reads what waits on the main shell's stream, clicks
    ``button`` for each ``comm_msg`` that is a click on it, and hands every
    other message to the kernel's own handler unchanged and in order (to run
    when the cell is over, as it would have). Outside a Jupyter kernel, off
    the main thread, or with an ipykernel whose stream it does not know, it
    does nothing.

    Parameters
    ----------
    button : ipywidgets.Button
        The button whose clicks to deliver.

    Returns
    -------
    int
        The number of clicks delivered.

    Examples
    --------
    >>> import ipywidgets
    >>> deliver_clicks(ipywidgets.Button())  # not in a kernel: nothing waits
    0
    """
    if threading.current_thread() is not threading.main_thread():
        return 0
    kernel = _kernel()
    stream = _main_shell_stream(kernel) if kernel is not None else None
    handler = getattr(stream, "_recv_callback", None)
    if stream is None or handler is None or getattr(stream, "closed", lambda: True)():
        return 0
    copy = getattr(stream, "_recv_copy", False)
    session = kernel.session
    model_id = button.model_id
    clicks = 0

    def sort(message: list[Any]) -> Any:
        nonlocal clicks
        if _is_click(session, message, model_id):
            clicks += 1
            return None
        return handler(message)

    import zmq

    stream.on_recv(sort, copy=copy)
    try:
        stream.flush(zmq.POLLIN, limit=MAX_MESSAGES_PER_POLL)
    finally:
        stream.on_recv(handler, copy=copy)
    for _ in range(clicks):
        button.click()
    return clicks


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where widgets can be shown."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _kernel() -> Any:
    """The running ipykernel, or None."""
    if not in_notebook():
        return None
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None)


_unknown_kernel_logged = False


def _main_shell_stream(kernel: Any) -> Any:
    """The stream on which the main shell receives its messages (ipykernel 6 and 7)."""
    global _unknown_kernel_logged
    try:  # ipykernel >= 7.1: the one the GUI event loops use
        from ipykernel.eventloops import get_shell_stream
    except ImportError:
        get_shell_stream = None
    if get_shell_stream is not None:
        try:
            return get_shell_stream(kernel)
        except Exception:
            log.debug("no shell stream from ipykernel", exc_info=True)
            return None
    if not getattr(kernel, "_supports_kernel_subshells", False):  # ipykernel 6
        return getattr(kernel, "shell_stream", None)
    if not _unknown_kernel_logged:
        _unknown_kernel_logged = True
        log.info("this ipykernel does not let Stop be heard while a cell runs: interrupt instead")
    return None


def _is_click(session: Any, message: list[Any], model_id: str) -> bool:
    """Whether a raw shell message is a browser's click on the widget ``model_id``.

    Only the header is deserialized, which checks the signature without
    recording it, so a message that is not a click reaches the kernel intact.
    """
    try:
        _, frames = session.feed_identities(list(message), copy=not _is_frame(message[0]))
        parsed = session.deserialize(frames, content=False, copy=not _is_frame(message[0]))
        if parsed["header"].get("msg_type") != "comm_msg":
            return False
        content = session.unpack(parsed["content"])
    except Exception:  # not for us to judge: the kernel will say what is wrong with it
        return False
    data = content.get("data") or {}
    event = data.get("content") or {}
    return (
        content.get("comm_id") == model_id
        and data.get("method") == "custom"
        and isinstance(event, dict)
        and event.get("event") == "click"
    )


def _is_frame(part: Any) -> bool:
    return not isinstance(part, bytes | bytearray | memoryview)


def _text(value: Any) -> str:
    return "—" if value is None else html.escape(str(value))


def _shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
