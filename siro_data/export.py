"""The manifest handed to the speech-data tools: a Hugging Face dataset, a NeMo manifest.

Both take the ``ok`` rows only (a failed or stopped row has no file, and a tombstone,
``deleted`` in Siro or ``expired`` by the retention rule, is not to be used) and point at
each recording's WAV/FLAC copy where ``convert_to`` made one (``audio_path``),
else at the download itself (``path``): the copies are what every decoder reads.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from .filesystems import is_bucket

if TYPE_CHECKING:
    import datasets

#: The column of :func:`to_hf_dataset` that holds the audio.
AUDIO_COLUMN = "audio"


def to_hf_dataset(manifest: pd.DataFrame) -> datasets.Dataset:
    """The ok rows as a Hugging Face ``datasets.Dataset`` with an ``Audio`` column.

    Needs the ``hf`` extra (``pip install 'siro-data[hf]'``). The ``audio``
    column is a ``datasets.Audio`` feature on the files (the WAV/FLAC copies
    where present), by path; ``save_to_disk`` copies their bytes into the
    saved dataset, which then travels without them. Nothing is decoded to
    build, save or load it (``datasets.load_from_disk``), so no torch is
    needed for that. Decoding a row (``dataset[0]["audio"]``) uses
    ``datasets``' own decoder (torchcodec in recent versions); cast the column
    to ``datasets.Audio(decode=False)`` to get ``{"bytes", "path"}`` instead.
    Every column of the manifest follows, with its values (columns you
    added, such as the listing's ``title``, included).

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest, as :func:`siro_data.fetch_all` or
        :func:`siro_data.read_manifest` return it.

    Returns
    -------
    datasets.Dataset
        One row per ok recording, in the manifest's order: ``audio``, then
        the manifest's columns.

    Examples
    --------
    >>> from siro_data.rows import stopped_row, to_frame
    >>> manifest = to_frame([{"recording_id": "a", "path": "/data/a.m4a",
    ...                       "audio_path": "/data/a.wav", "duration": 2.5},
    ...                      stopped_row("b")])
    >>> dataset = to_hf_dataset(manifest)
    >>> dataset.num_rows, dataset.features["audio"].decode, dataset.column_names[:3]
    (1, True, ['audio', 'recording_id', 'status'])
    >>> import datasets
    >>> dataset.cast_column("audio", datasets.Audio(decode=False))[0]["audio"]
    {'bytes': None, 'path': '/data/a.wav'}
    """
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("to_hf_dataset needs datasets: pip install 'siro-data[hf]'") from exc

    frame = _ok_rows(manifest)
    # Arrow's plain string type: the Audio feature casts it as paths (not large_string), and an
    # empty column keeps its type (an empty column of objects has none to give).
    paths = pd.Series(
        list(_audio_files(frame)), index=frame.index, dtype=pd.ArrowDtype(pa.string())
    )
    frame.insert(0, AUDIO_COLUMN, paths)
    table = datasets.Dataset.from_pandas(frame, preserve_index=False)
    return table.cast_column(AUDIO_COLUMN, datasets.Audio())


def to_nemo_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the ok rows as a NeMo manifest: one JSON object per line.

    Each line has NeMo's ``audio_filepath`` (absolute: the WAV/FLAC copy where
    present, which NeMo's loaders read, else the download) and ``duration``
    (seconds), plus ``sample_rate`` and ``recording_id``. Add a ``text`` field
    of your own to train speech recognition on it. The file is written under
    a temporary name and renamed: never half written.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A manifest, as :func:`siro_data.fetch_all` or
        :func:`siro_data.read_manifest` return it.
    path : path-like
        Where to write (``.json`` or ``.jsonl`` by NeMo's habit); replaced if it exists.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.rows import to_frame
    >>> manifest = to_frame([{"recording_id": "a", "path": "/data/a.m4a",
    ...                       "audio_path": "/data/a.wav", "duration": 2.5, "sample_rate": 8000},
    ...                      {"recording_id": "b", "error": "404: Recording not found"}])
    >>> written = to_nemo_manifest(manifest, pathlib.Path(tempfile.mkdtemp()) / "train.json")
    >>> print(written.read_text(), end="")
    {"audio_filepath": "/data/a.wav", "duration": 2.5, "sample_rate": 8000, "recording_id": "a"}
    """
    target = Path(path)
    ok = _ok_rows(manifest)
    lines = [
        json.dumps(
            {
                "audio_filepath": audio if is_bucket(audio) else str(Path(audio).absolute()),
                "duration": _number(duration, float),
                "sample_rate": _number(rate, int),
                "recording_id": recording_id,
            }
        )
        + "\n"
        for audio, duration, rate, recording_id in zip(
            _audio_files(ok), ok["duration"], ok["sample_rate"], ok["recording_id"], strict=True
        )
    ]
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.writelines(lines)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _ok_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows with a complete file (status ``ok``: no error), every column kept."""
    return manifest[manifest["error"].isna().to_numpy(dtype=bool)].reset_index(drop=True)


def _audio_files(ok: pd.DataFrame) -> pd.Series:
    """The WAV/FLAC copy where there is one, else the download."""
    copies = ok["audio_path"] if "audio_path" in ok else pd.Series(pd.NA, index=ok.index)
    return copies.fillna(ok["path"]).astype(object)


def _number(value: Any, kind: type) -> Any:
    """A JSON number, or null for a missing one (JSON has no NaN)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return kind(value)
