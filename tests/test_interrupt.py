"""The kernel's interrupt in Jupyter stops the whole queue, as it does for any cell.

The manifest is saved, the cell ends with one short ``KeyboardInterrupt``, the panel leaves a
record saying "interrupted", the cells queued behind it (Run All) do not run, and the next run
continues the partial files: nothing is downloaded twice.
"""

from __future__ import annotations

import json
import queue
import re
import time

from test_widgets import kernel  # noqa: F401  (the fixture: a real ipykernel)

SETUP = """
import json
from pathlib import Path

import siro_data
from siro_data.emulator import Emulator, Faults, sample_recordings
from siro_data.archive import journal_path
from siro_data.manifest import read_manifest

emu = Emulator(recordings=sample_recordings(n=6), faults=Faults(bandwidth=50_000)).start()
ids = list(emu.recordings)
order = []
"""

FETCH = """
manifest = siro_data.fetch_all(ids, out_dir="rec", manifest_path="manifest.parquet",
                               token=emu.token, api_url=emu.api_url, workers=2)
order.append("fetch")
"""

NEXT = """
order.append("next")
"""

REPORT = """
saved = read_manifest("manifest.parquet")
print(json.dumps({
    "order": order,
    "saved_ok": int(saved["status"].eq("ok").sum()),
    "journal_left": journal_path(Path("manifest.parquet")).exists(),
}))
"""

RESUME = """
emu.faults.bandwidth = None
again = siro_data.fetch_all(ids, out_dir="rec", manifest_path="manifest.parquet",
                            token=emu.token, api_url=emu.api_url, progress=False)
print(json.dumps({
    "all_ok": bool(again["status"].eq("ok").all()),
    "served": emu.stats.total_bytes_served,
    "sizes": sum(r.size for r in emu.recordings.values()),
}))
emu.stop()
"""


def test_an_interrupt_in_jupyter_saves_then_stops_the_cell_and_the_queue(kernel):  # noqa: F811
    kernel.run(SETUP)
    fetch_id = kernel.client.execute(FETCH)
    next_id = kernel.client.execute(NEXT)  # queued behind the busy cell, as Run All does
    interrupted = error = record = None
    stderr = []
    for kind, content, parent, _, done in kernel.events(timeout=120):
        if kind == "comm_msg" and done >= 1 and not interrupted:
            kernel.manager.interrupt_kernel()  # the ■ button, after the first row
            interrupted = time.monotonic()
        if parent == fetch_id:
            if kind == "error":
                error = content
            if kind == "stream" and content["name"] == "stderr":
                stderr.append(content["text"])
            if kind == "update_display_data":
                record = content["data"]
            if kind == "status" and content["execution_state"] == "idle":
                ended = time.monotonic()
                break

    assert interrupted is not None and error is not None
    assert ended - interrupted < 2
    assert error["ename"] == "Interrupted"  # a KeyboardInterrupt, shown as one line:
    assert error["traceback"] == [f"KeyboardInterrupt: {error['evalue']}"]
    assert re.fullmatch(
        r"interrupted: the manifest keeps the rows finished, in /\S+/manifest\.parquet;"
        r" run again to resume",
        error["evalue"],
    ), error["evalue"]
    assert stderr == []  # the exception is the one message
    assert record["text/plain"].startswith("siro_data.fetch_all: interrupted: ")
    assert "application/vnd.jupyter.widget-view+json" not in record

    replies = {}
    while not {fetch_id, next_id} <= set(replies):  # the queued cell was aborted, not run
        try:
            reply = kernel.client.get_shell_msg(timeout=10)
        except queue.Empty:
            break
        replies[reply["parent_header"].get("msg_id")] = reply["content"]["status"]
    assert replies.get(fetch_id) == "error"
    assert replies.get(next_id) == "aborted"

    report = json.loads(kernel.run(REPORT))
    assert report["order"] == []  # neither the rest of the cell nor the next one ran
    assert 1 <= report["saved_ok"] < 6
    assert not report["journal_left"]

    resumed = json.loads(kernel.run(RESUME))
    assert resumed["all_ok"]
    assert resumed["served"] <= 1.1 * resumed["sizes"]  # partials continued, nothing twice
