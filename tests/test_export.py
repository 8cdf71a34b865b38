"""Exports to the speech-data tools, built from a real run and read back as the tools read them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
import soundfile
from support import fetch

from siro_data import to_hf_dataset, to_nemo_manifest
from siro_data.rows import stopped_row, to_frame


@pytest.fixture
def manifest(emulator, out_dir, manifest_path) -> pd.DataFrame:
    """Six recordings: four fetched with WAV copies, one refused by the API, one never found."""
    ids = list(emulator.recordings)
    emulator.faults.api_status[ids[1]] = 403
    emulator.faults.api_status[ids[4]] = 404
    done = fetch(emulator, ids, out_dir, manifest_path, convert_to="wav")
    assert done["status"].tolist().count("ok") == 4
    return done


def test_a_hugging_face_dataset_of_the_ok_rows_round_trips(manifest, tmp_path):
    ok = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    dataset = to_hf_dataset(manifest)
    assert isinstance(dataset.features["audio"], datasets.Audio)
    assert dataset.column_names == ["audio", *manifest.columns]

    in_memory = dataset.cast_column("audio", datasets.Audio(decode=False))  # no torch needed
    assert [row["audio"] for row in in_memory] == [
        {"bytes": None, "path": path} for path in ok["audio_path"]
    ]

    dataset.save_to_disk(tmp_path / "hf")  # the audio goes in with it: a dataset that travels
    back = datasets.load_from_disk(str(tmp_path / "hf"))
    assert isinstance(back.features["audio"], datasets.Audio)
    files = back.cast_column("audio", datasets.Audio(decode=False))
    for row, path in zip(files, ok["audio_path"], strict=True):
        assert row["audio"] == {"bytes": Path(path).read_bytes(), "path": Path(path).name}
        samples, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))  # the WAV copy, whole
        assert len(samples) / rate == pytest.approx(row["duration"], abs=0.05)
        assert rate == row["sample_rate"]
    assert back["recording_id"] == ok["recording_id"].tolist()
    assert back["path"] == ok["path"].tolist()
    assert back["duration"] == ok["duration"].tolist()
    assert back["sample_rate"] == ok["sample_rate"].tolist()
    assert back["sha256"] == ok["sha256"].tolist()
    assert set(back["status"]) == {"ok"}


def test_without_copies_the_dataset_points_at_the_downloads_and_keeps_added_columns(
    emulator, out_dir, manifest_path
):
    ids = list(emulator.recordings)[:2]
    manifest = fetch(emulator, ids, out_dir, manifest_path)
    manifest["title"] = ["first call", "second call"]  # joined from the listing, say
    dataset = to_hf_dataset(manifest)
    files = dataset.cast_column("audio", datasets.Audio(decode=False))
    assert [row["audio"]["path"] for row in files] == manifest["path"].tolist()
    assert dataset["title"] == ["first call", "second call"]


def test_a_nemo_manifest_of_the_ok_rows_round_trips(manifest, tmp_path):
    ok = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    written = to_nemo_manifest(manifest, tmp_path / "train_manifest.json")

    assert written == tmp_path / "train_manifest.json"
    text = written.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == [
        {
            "audio_filepath": row.audio_path,
            "duration": row.duration,
            "sample_rate": row.sample_rate,
            "recording_id": row.recording_id,
        }
        for row in ok.itertuples()
    ]
    for line in lines:
        assert Path(line["audio_filepath"]).is_absolute()
        assert soundfile.info(line["audio_filepath"]).samplerate == line["sample_rate"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".train*"))


def test_a_manifest_with_no_ok_row_exports_empty_not_an_error(tmp_path):
    """A first run where everything failed, or no run yet: empty, typed, saved as usual."""
    for manifest in (to_frame([]), to_frame([stopped_row("a")])):
        dataset = to_hf_dataset(manifest)
        assert dataset.num_rows == 0 and isinstance(dataset.features["audio"], datasets.Audio)
        dataset.save_to_disk(tmp_path / "hf")
        written = to_nemo_manifest(manifest, tmp_path / "train.json")
        assert written.read_text() == ""
