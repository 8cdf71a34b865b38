"""The quickstart notebook: stored clean, and executed to check what each cell shows.

Without a token it runs on the emulator it starts itself; with ``SIRO_AUTH_TOKEN`` (and
``SIRO_API_URL``) set, the same cells run against "the real API", played here by an emulator
in the test process, and must work unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from siro_data import read_manifest
from siro_data.emulator import Emulator, sample_recordings

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def execute(tmp_path: Path) -> nbformat.NotebookNode:
    """Run a copy of the notebook in ``tmp_path/notebooks`` (its ``../data`` is in tmp_path)."""
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    notebook = nbformat.read(copy, as_version=4)
    NotebookClient(notebook, timeout=180, resources={"metadata": {"path": copy.parent}}).execute()
    return notebook


def code_cells(notebook: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {cell.id: cell for cell in notebook.cells if cell.cell_type == "code"}


def text(cell: nbformat.NotebookNode, stream: str | None = None) -> str:
    """What a cell showed as text: one stream, or every stream and plain-text/HTML result."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            if stream in (None, output.name):
                parts.append(output.text)
        elif stream is None and "data" in output:
            parts.append(output.data.get("text/plain", "") + output.data.get("text/html", ""))
    return "".join(parts)


def images(cell: nbformat.NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(output.data["image/png"])
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def record(cell: nbformat.NotebookNode) -> str:
    """The summary a finished panel left in the cell: its plain text (its HTML says the same)."""
    shown = [output.data for output in cell.outputs if "data" in output]
    assert all(WIDGET_VIEW not in data for data in shown), "a widget is left in the notebook"
    records = [data for data in shown if "siro-data-record" in data.get("text/html", "")]
    assert len(records) == 1, shown
    return records[0]["text/plain"]


def number(pattern: str, haystack: str) -> float:
    found = re.search(pattern, haystack)
    assert found, f"{pattern!r} not in {haystack!r}"
    return float(found.group(1))


def assert_plots(cells: dict[str, nbformat.NotebookNode]) -> None:
    for name in ("histogram", "compare", "samples"):
        pictures = images(cells[name])
        assert len(pictures) == 1, name
        assert pictures[0].startswith(PNG_SIGNATURE) and len(pictures[0]) > 5_000, name


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert "widgets" not in notebook.metadata
    assert "SIRO_AUTH_TOKEN" in notebook.cells[0].source  # the first cell says how to use Siro


def test_quickstart_without_a_token_runs_the_emulator_and_shows_each_step(tmp_path, monkeypatch):
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("SIRO_API_URL", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the demo's fresh folder lands in tmp_path
    samples = list(sample_recordings().values())  # what the notebook's emulator serves
    refused, garbled = samples[1:3]
    longest = max(samples, key=lambda rec: rec.duration)  # the one heard and loaded

    notebook = execute(tmp_path)
    cells = code_cells(notebook)

    setup = text(cells["setup"])
    assert "Using the emulator: no token, no network" in setup
    folder = Path(re.search(r"Data folder: (.+)", setup).group(1).strip())
    assert folder.parent == tmp_path.resolve()
    assert not (tmp_path / "data").exists()  # the demo leaves the repository's data alone

    assert "12 ids read from ids.csv" in text(cells["csv"])
    assert samples[0].id in text(cells["csv"])
    listing = text(cells["listing"])
    assert "12 recordings listed" in listing
    newest = max(samples, key=lambda rec: rec.date_created)  # Siro lists the newest first
    assert "duration_api" in listing and newest.id in listing and newest.title in listing

    # The live panel left its final summary, and the run logged its warning. The slow line
    # makes the fetch last long enough to try Stop.
    fetch = record(cells["fetch"])
    assert fetch.startswith("siro_data.fetch_all: done\n12 recordings: 10 ok, 2 failed\n")
    assert number(r"MB received in (\d+) s", fetch) >= 5
    assert f"manifest: {folder / 'manifest.parquet'}" in fetch
    assert f"{refused.id}  forbidden  403:" in fetch
    assert f"{garbled.id}  not_audio  storage answered 200 with text/html" in fetch
    assert "2 of 12 recordings failed" in text(cells["fetch"], "stderr")

    manifest = text(cells["manifest"], "stdout")
    assert "By status: {'ok': 10, 'failed': 2}" in manifest
    assert "10 of 12 recordings ok" in manifest
    assert "Failed, by kind: {'forbidden': 1, 'not_audio': 1}" in manifest
    ok_hours = sum(rec.duration for rec in samples if rec not in (refused, garbled)) / 3600
    assert number(r"([\d.]+) hours of audio", manifest) == pytest.approx(ok_hours, abs=0.001)

    summary = text(cells["summary"])
    assert "12 recordings: 10 ok, 2 failed" in summary
    assert f"forbidden: 1 (e.g. '{refused.id}': 403" in summary
    assert f"not_audio: 1 (e.g. '{garbled.id}'" in summary
    assert "hours in" in summary

    retry = text(cells["retry"], "stdout")
    assert "2 recordings: 2 ok, 0 failed" in retry
    assert "2 recordings: 2 ok, 0 failed\n" in record(cells["retry"])

    saved = text(cells["saved"], "stdout")
    assert "12 rows in manifest.parquet" in saved
    assert "Same column types as fetch_all returns: True" in saved
    assert "12 recordings: 12 ok, 0 failed" in saved

    compare = text(cells["compare"], "stdout")
    assert "12 recordings in both" in compare
    truth = max(abs(rec.duration - rec.duration_ms_api / 1000) for rec in samples)
    gap = number(r"largest difference: ([\d.]+) s", compare)
    assert gap < 0.01 and gap == pytest.approx(truth, abs=0.001)
    assert_plots(cells)

    listen = text(cells["listen"])
    assert f"{longest.id}: {longest.duration:.2f} s" in listen
    player = re.search(r'<audio[^>]*>\s*<source src="data:audio/mp4;base64,([^"]+)"', listen)
    assert player, listen[:500]
    assert hashlib.sha256(base64.b64decode(player.group(1))).hexdigest() == longest.sha256

    assert longest.extension == "m4a"  # 16 kHz AAC: decoded to its exact length
    frames = round(longest.duration * 16_000)
    loaded = text(cells["samples"], "stdout")
    assert f"shape ({frames},), float32, 16000 Hz: {longest.duration:.2f} s" in loaded

    assert "12 recordings: 12 ok, 0 failed\n0.0 MB received in" in record(cells["wav"])
    wav = text(cells["wav"], "stdout")
    assert "12 WAV copies" in wav
    assert f"reads {longest.id}-" in wav and f".wav: shape ({frames},), 16000 Hz" in wav

    rerun = text(cells["rerun"], "stdout")
    assert "12 recordings: 12 ok, 0 failed" in rerun
    assert "API calls: 0, bytes downloaded: 0" in rerun
    assert "12 recordings: 12 ok, 0 failed\n0.0 MB received in" in record(cells["rerun"])

    assert not folder.exists()  # the last cell removed the demo's folder
    assert list(tmp_path.iterdir()) == [tmp_path / "notebooks"]


def test_quickstart_with_a_token_uses_the_api_unchanged(tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    recent = [  # the last 7 days are what the notebook lists with a token
        dataclasses.replace(rec, date_created=now - timedelta(days=1, minutes=index))
        for index, rec in enumerate(sample_recordings().values())
    ]
    with Emulator(recent, token="tok-quickstart") as api:
        monkeypatch.setenv("SIRO_AUTH_TOKEN", api.token)
        monkeypatch.setenv("SIRO_API_URL", api.api_url)
        notebook = execute(tmp_path)
        stats = api.stats

    cells = code_cells(notebook)
    shown = "".join(text(cell) for cell in cells.values())
    assert "Using the Siro API with your SIRO_AUTH_TOKEN" in text(cells["setup"])
    assert "emulator" not in shown.lower()
    assert "API calls" not in shown  # the emulator's counts are shown only in the demo
    assert "the listing below says what to fetch" in text(cells["csv"])
    assert "12 recordings listed" in text(cells["listing"])
    assert "12 of 12 recordings ok" in text(cells["manifest"])
    assert "Failed, by kind: {}" in text(cells["manifest"])
    assert "0 recordings: 0 ok, 0 failed" in text(cells["retry"])
    assert "Same column types as fetch_all returns: True" in text(cells["saved"])
    assert "12 recordings in both" in text(cells["compare"])
    assert_plots(cells)
    assert "<audio" in text(cells["listen"])
    assert "12 recordings: 12 ok, 0 failed" in text(cells["rerun"])

    # One listing and one signed URL and download per recording over the whole notebook:
    # the retry, the WAV copies and the re-run asked Siro nothing and downloaded nothing.
    assert stats.listing_requests == 1
    assert stats.api_calls == {rec.id: 1 for rec in recent}
    assert dict(stats.bytes_served) == {rec.id: rec.size for rec in recent}
    data = tmp_path / "data"  # the repository's data folder, seen from notebooks/
    on_disk = read_manifest(data / "manifest.parquet")
    assert len(on_disk) == 12 and on_disk["error"].isna().all()
    assert all(Path(path).parent == data.resolve() / "recordings" for path in on_disk["path"])
    assert on_disk["audio_path"].map(lambda path: Path(path).suffix).eq(".wav").all()
