"""What a run shows: the face chosen for where it runs, an honest ETA, a pipeline's plain log
lines, and the record the notebook panel leaves behind.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from support import cli, fetch, final_path, finish

from siro_data import progress
from siro_data.download import partial_path
from siro_data.progress import LogProgress, TqdmProgress, reporter_for
from siro_data.tally import Tally
from siro_data.widgets import Panel

#: Control characters (tqdm's \r and \x1b[A among them); a log may hold \n only.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: One progress line between the first and the last.
PROGRESS_LINE = re.compile(
    r"siro_data\.progress: (\d+) done, (\d+) failed, (\d+) stopped, (\d+) remaining; "
    r"[\d.]+ MB received, [\d.]+ MB/s, ETA (unknown|< 1 s|\d+ s|\d+ min \d\d s)$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_picks_the_face_that_suits_where_the_run_is(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert type(reporter_for("auto")) is TqdmProgress
    assert type(reporter_for(True)) is TqdmProgress  # True means auto
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # cron, Airflow, CI: a file or a pipe
    assert type(reporter_for("auto")) is LogProgress
    assert type(reporter_for(True)) is LogProgress
    assert type(reporter_for("bars")) is TqdmProgress  # asked for: given, wherever
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert type(reporter_for("auto")) is Panel
    assert type(reporter_for("log")) is LogProgress
    for nothing in ("none", False):
        assert reporter_for(nothing).disable
    panel = Panel()
    assert reporter_for(panel) is panel


def test_a_choice_that_does_not_exist_is_refused_before_any_request(
    emulator, out_dir, manifest_path
):
    with pytest.raises(ValueError, match="progress must be one of 'auto', 'bars', 'log', 'none'"):
        fetch(emulator, list(emulator.recordings), out_dir, manifest_path, progress="quiet")
    assert emulator.stats.api_requests == 0


def test_eta_counts_the_bytes_still_to_come_not_fast_failures():
    tally = Tally()
    tally.start(total=20, done=0, now=0.0)
    for n in range(10):  # refused at once, in the first second
        tally.finished(
            {"recording_id": f"f{n}", "error": "403: Forbidden", "error_kind": "forbidden"}
        )
    assert tally.eta(now=1.0) is None  # nothing downloaded yet: unknown, not "0 s"
    tally.add_bytes(4_000_000)
    tally.finished({"recording_id": "a", "error": None, "size_bytes": 1_000_000})
    # 9 left at 1 MB each, 4 MB arrived in 10 s: 22.5 s (a pace of rows would say 8 s).
    assert tally.eta(now=10.0) == pytest.approx(22.5)
    assert tally.eta_text(now=10.0) == "ETA 22 s"
    tally.add_bytes(1_000_000_000)  # very fast now: while some are left, never "0 s"
    assert tally.eta_text(now=10.0) == "ETA < 1 s"
    for n in range(9):
        tally.finished({"recording_id": f"s{n}", "error": "not fetched", "error_kind": "stopped"})
    assert tally.eta(now=10.0) == 0.0 and tally.remaining == 0
    assert tally.counts() == "1 done, 10 failed, 9 stopped, 0 remaining"


def test_eta_counts_what_the_downloads_under_way_still_expect():
    """Small files finish first: their mean size says little of the large one still coming."""
    tally = Tally()
    tally.start(total=4, done=0, now=0.0)
    for size in (1_000_000, 1_000_000, 1_000_000, 10_000_000):  # storage announced them
        tally.expect_bytes(size)
    tally.add_bytes(4_000_000)
    for name in "abc":
        tally.finished({"recording_id": name, "error": None, "size_bytes": 1_000_000})
    assert tally.eta(now=4.0) == pytest.approx(9.0)  # 9 MB still expected, at 1 MB/s


class Expecting(LogProgress):
    """Remembers what the run said was to come."""

    def __init__(self) -> None:
        super().__init__(interval=3600)
        self.expected: list[int] = []

    def expect_bytes(self, count: int) -> None:
        super().expect_bytes(count)
        self.expected.append(count)


def test_a_run_tells_its_reporter_the_bytes_each_download_expects(emulator, out_dir, manifest_path):
    recordings = list(emulator.recordings.values())
    first = recordings[0]
    partial = partial_path(final_path(out_dir, first))  # an earlier run's first 5,000 bytes
    partial.parent.mkdir(parents=True)
    partial.write_bytes(first.data[:5_000])
    reporter = Expecting()
    fetch(emulator, [rec.id for rec in recordings], out_dir, manifest_path, progress=reporter)
    wanted = [first.size - 5_000, *(rec.size for rec in recordings[1:])]
    assert sorted(reporter.expected) == sorted(wanted)


def test_the_panel_leaves_a_readable_record_of_a_stopped_run():
    panel = Panel(manifest_path="/data/manifest.parquet")
    panel.start(total=4, done=0, stop=lambda: None)
    panel.add_bytes(1_500_000)
    panel.finished({"recording_id": "a", "error": None, "size_bytes": 1_500_000})
    message = "download 403: <b>refused</b> & more"
    panel.finished({"recording_id": "<b>", "error": message, "error_kind": "download"})
    panel.stop_button.click()
    for recording_id in "cd":
        panel.finished(
            {"recording_id": recording_id, "error": "not fetched", "error_kind": "stopped"}
        )
    panel.close()

    record = panel.record()
    assert record["text/plain"].splitlines() == [
        "siro_data.fetch_all: stopped: 2 not fetched — run again to resume",
        "4 recordings: 1 ok, 1 failed, 2 stopped (not fetched: run again to resume)",
        "1.5 MB received in 0 s",
        "manifest: /data/manifest.parquet",
        "errors (1):",
        f"  <b>  download  {message}",
    ]
    page = record["text/html"]
    assert "2 stopped (not fetched: run again to resume)" in page
    assert "manifest: /data/manifest.parquet" in page
    assert "&lt;b&gt;refused&lt;/b&gt; &amp; more" in page and "<b>refused" not in page
    # The finished panel no longer looks like a live Stop.
    assert panel.stop_button.disabled and panel.stop_button.button_style == ""
    assert panel.stop_button.description == "stopped"


def test_a_panel_closed_by_an_interrupt_says_interrupted():
    panel = Panel()
    panel.start(total=3, done=0, stop=lambda: None)
    panel.finished({"recording_id": "a", "error": None, "size_bytes": 10})
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        panel.close()  # as the run does, on its way out
    assert panel.status == "interrupted: 2 not fetched — run again to resume"
    assert panel.stop_button.description == "interrupted"
    assert panel.record()["text/plain"].startswith(
        "siro_data.fetch_all: interrupted: 2 not fetched — run again to resume\n"
        "3 recordings: 1 ok, 0 failed\n"
    )


@pytest.fixture
def ids_csv(tmp_path, emulator):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"recording_id": list(emulator.recordings)}).to_csv(path, index=False)
    return path


def test_a_pipeline_log_has_plain_progress_lines_only(tmp_path, emulator, ids_csv):
    """stderr is a pipe, as under cron, Airflow or CI: log lines, never tqdm's redraws."""
    emulator.faults.total_bandwidth = 500_000  # the six take about 2.5 s
    code, out, err = finish(
        cli(["fetch", str(ids_csv), "--log-interval", "0.4"], emulator, cwd=tmp_path)
    )

    assert code == 0, err
    assert "6 recordings: 6 ok, 0 failed" in out
    assert not CONTROL.search(err), repr(err[:300])
    lines = err.splitlines()
    assert all(line.startswith("INFO siro_data.progress: ") for line in lines), lines
    assert lines[0].endswith("siro_data.progress: fetching 6 recordings (0 already complete)")
    steps = [PROGRESS_LINE.search(line) for line in lines[1:-1]]
    assert len(steps) >= 3 and all(steps), lines
    done = [int(step.group(1)) for step in steps]
    assert done == sorted(done) and done[0] < 6  # lines while recordings were still coming
    manifest = tmp_path / "data" / "manifest.parquet"
    assert re.search(
        r"siro_data\.progress: done in \d+ s: 6 done, 0 failed, 0 stopped, 0 remaining; "
        rf"1\.3 MB received; manifest: {re.escape(str(manifest))}$",
        lines[-1],
    ), lines[-1]


def test_a_python_pipeline_without_logging_set_up_still_gets_plain_lines(tmp_path, emulator):
    script = textwrap.dedent(
        f"""
        import siro_data
        manifest = siro_data.fetch_all(
            {list(emulator.recordings)!r}, out_dir="rec", manifest_path="m.parquet",
            token={emulator.token!r}, api_url={emulator.api_url!r},
        )
        print(manifest.status.value_counts().to_dict())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'ok': 6}"
    assert not CONTROL.search(done.stderr), repr(done.stderr[:300])
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines  # a short run: its first line and its last
    assert lines[0].endswith(" siro_data.progress: fetching 6 recordings (0 already complete)")
    assert " siro_data.progress: done in " in lines[1]
