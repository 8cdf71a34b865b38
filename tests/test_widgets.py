"""The notebook panel: its widgets' values as a run goes, Stop, and Stop heard by a busy kernel."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from jupyter_client import KernelManager
from support import fetch, sha256

from siro_data import widgets
from siro_data.manifest import read_manifest
from siro_data.naming import file_stem
from siro_data.progress import Reporter
from siro_data.widgets import Panel, deliver_clicks


class Clock:
    """Stands in for ``time.monotonic`` in the panel: time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(widgets, "monotonic", fake)
    return fake


def sent_messages(*models) -> list:
    """Record every comm message the given widgets send from now on."""
    sent = []
    for model in models:
        original = model.comm.send

        def send(*args, _original=original, _model=model, **kwargs):
            sent.append(_model)
            return _original(*args, **kwargs)

        model.comm.send = send
    return sent


def ok(recording_id: str, size_bytes: int = 2_000_000) -> dict:
    return {
        "recording_id": recording_id,
        "error": None,
        "error_kind": None,
        "size_bytes": size_bytes,
    }


def failed(recording_id: str, error: str, kind: str = "download") -> dict:
    return {"recording_id": recording_id, "error": error, "error_kind": kind}


def stopped(recording_id: str) -> dict:
    return failed(recording_id, "not fetched: the run was stopped", "stopped")


def test_panel_is_a_reporter():
    assert isinstance(Panel(), Reporter)


def test_values_as_a_run_progresses(clock):
    panel = Panel()
    panel.start(total=5, done=1, stop=lambda: None)
    assert (panel.progress.value, panel.progress.max) == (1, 5)
    assert panel.summary.value.startswith("<b>running</b>")
    assert "1 done · 0 failed · 4 remaining · 0.0 MB received" in panel.summary.value
    assert "ETA unknown" in panel.summary.value
    assert panel.errors.value == ""
    assert not panel.stop_button.disabled
    assert panel.stop_button.description == "Stop"

    clock.advance(2.0)
    panel.add_bytes(1_500_000)
    panel.add_bytes(500_000)
    panel.finished(ok("a"))
    assert (panel.progress.value, panel.progress.max) == (2, 5)
    assert "2 done · 0 failed · 3 remaining · 2.0 MB received" in panel.summary.value
    assert "1.0 MB/s" in panel.summary.value  # 2 MB in 2 s
    assert "ETA 6 s" in panel.summary.value  # three left, 2 MB each, at 1 MB/s
    assert panel.errors.value == ""

    clock.advance(2.0)
    panel.finished(failed("b", "download 404: NoSuchKey: gone", "download"))
    assert (panel.progress.value, panel.progress.max) == (3, 5)
    assert "2 done · 1 failed · 2 remaining" in panel.summary.value
    assert "ETA 8 s" in panel.summary.value  # two left, 2 MB each, at 2 MB in 4 s
    assert "<b>errors (1)</b>" in panel.errors.value
    assert "<td style='padding:0 0.8em 0 0;text-align:left;vertical-align:top'>b</td>" in (
        panel.errors.value
    )
    assert "NoSuchKey: gone" in panel.errors.value

    clock.advance(1.0)
    panel.finished(ok("c"))
    panel.finished(ok("d"))  # within the refresh interval: shown at the next poll
    assert panel.progress.value == 4
    clock.advance(0.3)
    panel.poll()
    assert panel.progress.value == 5
    assert "4 done · 1 failed · 0 remaining" in panel.summary.value
    assert "ETA 0 s" in panel.summary.value
    assert (panel.done, panel.failed, panel.remaining, panel.bytes_received) == (4, 1, 0, 2_000_000)

    panel.close()
    assert panel.status == "done"
    assert panel.summary.value.startswith("<b>done</b> · 4 done · 1 failed · 0 remaining")
    assert "in 5 s" in panel.summary.value
    assert "MB/s" not in panel.summary.value and "ETA" not in panel.summary.value
    assert panel.stop_button.disabled
    assert panel.stop_button.description == "done"
    assert panel.stop_button.button_style == ""  # no longer the red button of a live run
    assert panel.progress.bar_style == "warning"  # one failed


def test_a_clean_run_ends_green(clock):
    panel = Panel()
    panel.start(total=2, done=0, stop=lambda: None)
    panel.finished(ok("a"))
    panel.finished(ok("b"))
    panel.close()
    assert panel.status == "done"
    assert panel.progress.bar_style == "success"
    assert (panel.progress.value, panel.progress.max) == (2, 2)


def test_rate_is_over_a_recent_window(clock):
    panel = Panel()
    panel.start(total=3, done=0, stop=lambda: None)
    for _ in range(10):  # 1 MB/s for 10 s
        clock.advance(1.0)
        panel.add_bytes(1_000_000)
        panel.poll()
    assert "10.0 MB received · 1.0 MB/s" in panel.summary.value
    for _ in range(10):  # then 3 MB/s: the last 5 s count, not the average of 20
        clock.advance(1.0)
        panel.add_bytes(3_000_000)
        panel.poll()
    assert "40.0 MB received · 3.0 MB/s" in panel.summary.value
    for _ in range(6):  # nothing arrives any more
        clock.advance(1.0)
        panel.poll()
    assert "40.0 MB received · 0.0 MB/s" in panel.summary.value


def test_bytes_from_workers_send_no_message(clock):
    panel = Panel()
    panel.start(total=3, done=0, stop=lambda: None)
    sent = sent_messages(panel.progress, panel.summary, panel.errors, panel.stop_button)

    def worker():
        for _ in range(2000):
            panel.add_bytes(16_384)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == []
    assert panel.bytes_received == 4 * 2000 * 16_384

    for name in "abc":  # rows in quick succession: no refresh until the interval has passed
        panel.finished(failed(name, "500: oops"))
    assert sent == []
    clock.advance(0.1)
    panel.poll()
    assert sent == []
    clock.advance(0.1)
    panel.poll()  # one refresh: progress, summary and the errors table
    assert sorted(map(id, sent)) == sorted(map(id, [panel.progress, panel.summary, panel.errors]))
    assert "131.1 MB received" in panel.summary.value
    assert panel.progress.value == 3


def test_error_messages_are_escaped(clock):
    panel = Panel()
    panel.start(total=2, done=0, stop=lambda: None)
    message = "download 403: <script>alert('x')</script> & <b>more</b>"
    panel.finished(failed("<img src=x onerror=alert(1)>", message, "forbidden"))
    panel.finished(
        {"recording_id": None, "error": "invalid id: missing (null)", "error_kind": "invalid_id"}
    )
    clock.advance(1.0)
    panel.poll()
    table = panel.errors.value
    assert "<script>" not in table and "<img" not in table and "<b>more" not in table
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;more&lt;/b&gt;"
    assert escaped in table
    assert "&lt;img src=x onerror=alert(1)&gt;" in table
    assert "<td style='padding:0 0.8em 0 0;text-align:left;vertical-align:top'>—</td>" in table
    assert "invalid id: missing (null)" in table


def test_long_messages_are_shortened(clock):
    panel = Panel()
    panel.start(total=1, done=0, stop=lambda: None)
    panel.finished(failed("a", "x" * 10_000))
    clock.advance(1.0)
    panel.poll()
    assert "x" * (widgets.MAX_MESSAGE_CHARS - 1) + "…" in panel.errors.value
    assert "x" * widgets.MAX_MESSAGE_CHARS not in panel.errors.value


def test_errors_table_keeps_the_latest(clock):
    panel = Panel(max_errors=3)
    panel.start(total=6, done=0, stop=lambda: None)
    for index in range(5):
        clock.advance(1.0)
        panel.finished(failed(f"id{index}", f"500: failure {index}"))
    table = panel.errors.value
    assert "<b>errors (5)</b>" in table
    assert "2 earlier errors not shown" in table
    assert [f"failure {index}" in table for index in range(5)] == [False, False, True, True, True]
    assert table.index("failure 2") < table.index("failure 3") < table.index("failure 4")


def test_stop_button(clock):
    calls = []
    panel = Panel()
    panel.start(total=4, done=0, stop=lambda: calls.append("stop"))
    panel.finished(ok("a"))

    panel.stop_button.click()
    assert calls == ["stop"]
    assert panel.stop_button.disabled
    assert panel.stop_button.description == "stopping…"
    assert panel.status == "stopping…"
    assert panel.summary.value.startswith("<b>stopping…</b>")
    assert "ETA" not in panel.summary.value

    panel.stop_button.click()  # a second click (a late message) changes nothing
    assert calls == ["stop"]

    panel.finished(ok("b"))  # in flight when Stop was clicked
    panel.finished(stopped("c"))
    panel.finished(stopped("d"))
    panel.close()
    assert panel.status == "stopped: 2 not fetched — run again to resume"
    assert panel.summary.value.startswith(
        "<b>stopped: 2 not fetched — run again to resume</b> · 2 done · 0 failed · 2 stopped"
    )
    assert panel.errors.value == ""  # stopped rows are not errors
    assert panel.stop_button.disabled
    assert panel.stop_button.description == "stopped"
    assert panel.progress.bar_style == "warning"
    assert (panel.progress.value, panel.progress.max) == (2, 4)

    panel.stop_button.click()  # after the run: nothing to stop
    assert calls == ["stop"]


def test_rows_a_stop_left_out_read_as_stopped(clock):
    panel = Panel()
    panel.start(total=3, done=1, stop=lambda: None)
    panel.finished(stopped("b"))
    panel.finished(stopped("c"))
    panel.close()
    assert panel.status == "stopped: 2 not fetched — run again to resume"


def test_a_run_ended_by_an_error_says_so(clock):
    panel = Panel()
    panel.start(total=3, done=0, stop=lambda: None)
    panel.finished(ok("a"))
    panel.close()  # fetch_all raised (a rejected token, a full disk): no row for the rest
    assert panel.status == "ended early: 2 not fetched — run again to resume"
    assert panel.stop_button.description == "ended early"
    assert panel.progress.bar_style == "warning"


def test_a_panel_can_show_a_second_run(clock):
    calls = []
    panel = Panel()
    panel.start(total=3, done=0, stop=lambda: calls.append(1))
    panel.add_bytes(5_000_000)
    panel.finished(failed("a", "500: oops"))
    panel.stop_button.click()
    panel.close()

    panel.start(total=3, done=2, stop=lambda: calls.append(2))
    assert panel.status == "running"
    assert not panel.stop_button.disabled
    assert panel.stop_button.description == "Stop"
    assert panel.progress.bar_style == ""
    assert (panel.progress.value, panel.progress.max) == (2, 3)
    assert "2 done · 0 failed · 1 remaining · 0.0 MB received" in panel.summary.value
    assert panel.errors.value == ""
    panel.stop_button.click()
    assert calls == [1, 2]


def test_outside_a_kernel_nothing_is_shown_and_polling_is_harmless(capsys):
    panel = Panel()
    panel.start(total=1, done=0, stop=lambda: None)
    panel.poll()
    assert deliver_clicks(panel.stop_button) == 0
    panel.close()
    assert capsys.readouterr().out == ""


class StopAfterFirstRow(Panel):
    """A panel that a test thread, standing in for a person, stops after the first row."""

    def __init__(self) -> None:
        super().__init__()
        self.first_row = threading.Event()
        self.rows: list[dict] = []

    def finished(self, row) -> None:
        super().finished(row)
        self.rows.append(dict(row))
        self.first_row.set()


def test_fetch_all_stopped_from_the_panel_then_resumed(
    emulator, recordings, out_dir, manifest_path
):
    emulator.faults.bandwidth = 100_000  # about 10 s for the six, two at a time
    panel = StopAfterFirstRow()

    def person():
        assert panel.first_row.wait(timeout=60)
        panel.stop_button.click()

    clicker = threading.Thread(target=person)
    clicker.start()
    ids = list(recordings)
    began = time.monotonic()
    manifest = fetch(emulator, ids, out_dir, manifest_path, workers=2, progress=panel)
    took = time.monotonic() - began
    clicker.join()

    assert took < 8
    assert list(manifest["recording_id"]) == ids
    kinds = manifest["error_kind"]
    assert (kinds == "stopped").sum() >= 2
    assert set(kinds.dropna()) == {"stopped"}
    assert (
        panel.status == f"stopped: {(kinds == 'stopped').sum()} not fetched — run again to resume"
    )
    assert panel.stop_button.disabled

    saved = read_manifest(manifest_path).set_index("recording_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(saved, manifest)

    finals = {path for path in out_dir.iterdir() if path.is_file() and path.suffix != ".part"}
    done = manifest[manifest["error"].isna()]
    assert finals == {Path(path) for path in done["path"]}
    for row in done.itertuples():
        data = recordings[row.recording_id].data
        assert Path(row.path).read_bytes() == data
    for recording_id in manifest.loc[kinds == "stopped", "recording_id"]:
        assert not list(out_dir.glob(f"{file_stem(recording_id)}.*[!t]"))

    emulator.faults.bandwidth = None
    again = fetch(emulator, ids, out_dir, manifest_path, progress=Panel())
    assert again["error"].isna().all()
    for row in again.itertuples():
        assert sha256(row.path) == row.sha256
        assert Path(row.path).read_bytes() == recordings[row.recording_id].data
    assert not list(out_dir.glob("*.part"))


# -- Stop heard by a real kernel while the cell runs ------------------------------------------

SETUP = """
import json
from pathlib import Path

import siro_data
from siro_data.emulator import Emulator, Faults, sample_recordings
from siro_data.manifest import read_manifest
from siro_data.widgets import Panel

emu = Emulator(recordings=sample_recordings(n=6), faults=Faults(bandwidth=50_000)).start()
ids = list(emu.recordings)
order = []  # cells that ran, in order

import ipywidgets

other = ipywidgets.Button(description="another widget")  # its click must wait for the cell
heard = []
other.on_click(lambda _: heard.append(list(order)))
print(other.model_id)
"""

FETCH = """
manifest = siro_data.fetch_all(ids, out_dir="rec", manifest_path="manifest.parquet",
                               token=emu.token, api_url=emu.api_url, workers=2,
                               progress=Panel())
order.append("fetch")
"""

CHECK = """
order.append("check")
saved = read_manifest("manifest.parquet").set_index("recording_id").loc[ids].reset_index()
done = manifest[manifest["error"].isna()]
finals = sorted(p.name for p in Path("rec").iterdir() if p.is_file() and p.suffix != ".part")
print(json.dumps({
    "order": order,
    "kinds": manifest["error_kind"].fillna("ok").tolist(),
    "saved_equal": saved.equals(manifest),
    "finals_are_done": finals == sorted(Path(p).name for p in done["path"]),
    "finals_intact": all(Path(r.path).read_bytes() == emu.recordings[r.recording_id].data
                         for r in done.itertuples()),
}))
"""

RESUME = """
emu.faults.bandwidth = None
again = siro_data.fetch_all(ids, out_dir="rec", manifest_path="manifest.parquet",
                            token=emu.token, api_url=emu.api_url, progress=False)
print(json.dumps({"all_ok": bool(again["error"].isna().all()),
                  "intact": all(Path(r.path).read_bytes() == emu.recordings[r.recording_id].data
                                for r in again.itertuples()),
                  "heard": heard}))
emu.stop()
"""


class Kernel:
    """A real ipykernel driven the way a browser drives it: execute requests and comm messages."""

    def __init__(self, cwd: Path) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def messages(self, timeout: float):
        """IOPub messages as they come; None every 0.05 s of silence."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                yield self.client.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                yield None
        raise AssertionError(f"the kernel kept busy more than {timeout} s")

    def events(self, timeout: float):
        """IOPub messages as (type, content, parent's msg_id, widget state, rows the panel
        counts done), silences left out.
        """
        for message in self.messages(timeout):
            if message is None:
                continue
            content = message["content"]
            state = content.get("data", {}).get("state", {})
            done = re.search(r"(\d+) done", str(state.get("value", "")))
            parent = message["parent_header"].get("msg_id")
            yield message["msg_type"], content, parent, state, int(done.group(1)) if done else 0

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute a cell to its end; its printed text (an error fails the test)."""
        msg_id = self.client.execute(code)
        printed = []
        for message in self.messages(timeout):
            if message is None or message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content["name"] == "stdout":
                printed.append(content["text"])
            assert kind != "error", "\n".join(content["traceback"])
            if kind == "status" and content["execution_state"] == "idle":
                return "".join(printed)
        raise AssertionError("unreachable")

    def click(self, model_id: str) -> None:
        """What a browser sends when the button is clicked."""
        content = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> Kernel:
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    started = Kernel(tmp_path)
    yield started
    started.close()


def test_stop_clicked_in_the_browser_ends_a_running_cell(kernel):
    other = kernel.run(SETUP).strip()
    fetch_id = kernel.client.execute(FETCH)
    check_id = kernel.client.execute(CHECK)  # queued behind the busy cell, as "Run All" does
    began = time.monotonic()
    button = clicked = report = None
    idle = []
    for kind, content, parent, state, done in kernel.events(timeout=120):
        if kind == "comm_open" and state.get("_model_name") == "ButtonModel":
            button = content["comm_id"]  # the panel is on screen: the cell runs
            kernel.click(other)
        if kind == "comm_msg" and done >= 1 and not clicked:
            kernel.click(button)  # Stop, after the first row, while the cell still runs
            clicked = time.monotonic()
        if kind == "error":
            pytest.fail("\n".join(content["traceback"]))
        if kind == "stream" and parent == check_id and content["name"] == "stdout":
            report = json.loads(content["text"])
        if kind == "status" and content["execution_state"] == "idle" and parent:
            idle.append((parent, time.monotonic()))
            if len(idle) == 2:
                break

    assert button is not None and clicked is not None
    assert [parent for parent, _ in idle] == [fetch_id, check_id]
    fetch_ended = idle[0][1]
    assert fetch_ended - clicked < 5, "the click was heard only when the cell ended"
    assert fetch_ended - began < 12  # the whole run takes more than 16 s at this bandwidth

    assert report["order"] == ["fetch", "check"]
    assert report["kinds"].count("stopped") >= 2
    assert set(report["kinds"]) == {"ok", "stopped"}
    assert report["saved_equal"]
    assert report["finals_are_done"]
    assert report["finals_intact"]

    resumed = json.loads(kernel.run(RESUME))
    assert resumed["all_ok"] and resumed["intact"]
    # The other widget's click was left to the kernel: handled once, after the busy cell.
    assert len(resumed["heard"]) == 1 and resumed["heard"][0][0] == "fetch"
