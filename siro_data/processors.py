"""What happens to a recording once its file is complete: post-steps on its row.

pooch's processors are the model: a step is a plain callable that takes a
complete row and returns it with more filled in (a copy's path, a figure), or
with its own error when it fails. A step is idempotent: a row it already
finished comes back as it is. Its ``done`` tells, over a whole frame at once,
which rows it has nothing left to do for, so that resuming a large archive
touches only the rows that need it.

Every id takes one path through a run: its resumed row, or a fresh download,
then the steps in order (:func:`apply`). A new step (a resample, a loudness
figure) is one more callable in the list, not another path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from . import audio
from .exceptions import SiroDataError
from .rows import Kind, Row, succeeded, with_error

log = logging.getLogger(__name__)


class Processor(Protocol):
    """A post-step: ``step(row) -> row``, and which rows of a frame it has already done."""

    def __call__(self, row: Row) -> Row:
        """``row`` (complete, no error) with the step's work done, or its error."""

    def done(self, rows: pd.DataFrame) -> pd.Series:
        """A boolean per row of ``rows`` (manifest rows): True where nothing is left to do."""


class Files(Protocol):
    """Where a run's audio lives (:attr:`siro_data.archive.Archive.audio`: a folder or a bucket
    prefix), as a post-step needs it."""

    def localized(self, path: str) -> AbstractContextManager[Path]: ...
    def final(self, name: str) -> str: ...
    def keep(self, local: Path, final: str) -> None: ...
    def existing(self, paths: list[str]) -> list[bool]: ...


@dataclass(frozen=True)
class Convert:
    """Write a WAV or FLAC copy of the download, which soundfile reads: the ``audio_path`` column.

    Parameters
    ----------
    fmt : {"wav", "flac"}
        Format of the copy (see :func:`siro_data.convert`).
    files : Files
        Where the audio lives: the copy is made on this machine and kept beside the download.
    overwrite : bool
        Write the copy again even when a valid one is there.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> from siro_data.archive import Archive
    >>> folder = tempfile.mkdtemp()
    >>> convert = Convert("wav", Archive(folder, f"{folder}/manifest.parquet").audio)
    >>> convert.done(pd.DataFrame({"audio_path": [None]})).tolist()
    [False]
    """

    fmt: str
    files: Files
    overwrite: bool = False

    def __call__(self, row: Row) -> Row:
        path = row["path"]
        try:
            with self.files.localized(path) as local:
                copy = audio.convert(local, self.fmt, overwrite=self.overwrite)
                if copy == local:  # the download already is such a file
                    return {**row, "audio_path": path}
                name = path.rsplit("/", 1)[-1]
                final = self.files.final(Path(name).stem + copy.name[len(local.stem) :])
                self.files.keep(copy, final)
        except SiroDataError as exc:
            log.info("%r: conversion to %s failed: %s", row["recording_id"], self.fmt, exc)
            return with_error(row, f"conversion to {self.fmt} failed: {exc}", Kind.CONVERSION)
        return {**row, "audio_path": final}

    def done(self, rows: pd.DataFrame) -> pd.Series:
        """Rows whose copy in this format exists (written whole: complete if there)."""
        copies = rows["audio_path"].astype(object).tolist()
        wanted = [
            isinstance(copy, str) and Path(copy.rsplit("/", 1)[-1]).suffix == f".{self.fmt}"
            for copy in copies
        ]
        asked = [copy for copy, ok in zip(copies, wanted, strict=True) if ok]
        found = iter(self.files.existing(asked) if asked else [])
        there = [ok and next(found) for ok in wanted]
        return pd.Series(there, index=rows.index, dtype=bool)


def for_settings(convert_to: str | None, files: Files, overwrite: bool = False) -> list[Processor]:
    """The steps ``fetch_all``'s settings ask for, in order."""
    return [] if convert_to is None else [Convert(convert_to, files, overwrite)]


def apply(processors: Sequence[Processor], row: Row) -> Row:
    """Run the steps on a complete row, in order; a failed step ends the chain."""
    for step in processors:
        if not succeeded(row):
            break
        row = step(row)
    return row


def pending(processors: Sequence[Processor], rows: pd.DataFrame) -> pd.Series:
    """A boolean per row: True where some step still has work to do."""
    left = pd.Series(False, index=rows.index, dtype=bool)
    for step in processors:
        left |= ~step.done(rows)
    return left
