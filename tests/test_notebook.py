"""The quickstart notebook runs top to bottom with no token, and shows what it promises."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


def output_text(cell) -> str:
    """What a code cell showed: printed text, and its plain-text and HTML results."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.append(data.get("text/plain", "") + data.get("text/html", ""))
    return "".join(parts)


def test_quickstart_runs_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("SIRO_AUTH_TOKEN", raising=False)
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    notebook = nbformat.read(copy, as_version=4)

    NotebookClient(notebook, timeout=180, resources={"metadata": {"path": copy.parent}}).execute()

    setup, fetch, durations, player, rerun, _stop = (
        output_text(cell) for cell in notebook.cells if cell.cell_type == "code"
    )
    assert "12 recording ids" in setup
    assert "12 recordings: 12 ok, 0 failed" in fetch
    assert "recording_id" in fetch  # the manifest's head is shown
    assert "count    12.0" in durations
    assert "<audio" in player
    assert "API calls: 0, bytes downloaded: 0" in rerun
    assert (tmp_path / "data" / "manifest.parquet").exists()
    audio_files = (tmp_path / "data" / "recordings").glob("*-*.*")
    assert len([path for path in audio_files if path.suffix != ".part"]) == 12
