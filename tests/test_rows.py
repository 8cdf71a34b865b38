"""A manifest row, defined once: builders, the error kinds, and the README's table of them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support import markdown_table

from siro_data.exceptions import (
    AuthError,
    DownloadError,
    ExpiredURLError,
    NotAudioError,
    SiroAPIError,
)
from siro_data.rows import (
    COLUMNS,
    KINDS,
    RUN_KINDS,
    Kind,
    error_row,
    is_stopped,
    ok_row,
    stopped_row,
    succeeded,
    to_frame,
    with_error,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_error_kinds() -> list[str]:
    """The ``error_kind`` column of the README's table of errors, row by row."""
    return [row[-1].strip("`") for row in markdown_table(README, "Errors")]


def test_the_readme_table_lists_every_kind_a_row_can_have():
    assert set(readme_error_kinds()) == set(KINDS)


def test_the_readme_names_the_kinds_no_row_has():
    section = README.read_text(encoding="utf-8").split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    for kind in RUN_KINDS:
        assert f"`{kind}`" in section


def test_every_kind_an_error_carries_is_defined():
    errors = [
        *(SiroAPIError(status, "m") for status in (None, 200, 400, 403, 404, 418, 422, 429, 503)),
        AuthError(401, "m"),
        DownloadError("m"),
        ExpiredURLError("m", 400),
        NotAudioError("m"),
    ]
    assert {error.kind for error in errors} <= set(KINDS) | set(RUN_KINDS)
    assert not set(KINDS) & set(RUN_KINDS)


def test_builders_fill_the_schema():
    expires = pd.Timestamp("2026-12-01 12:00", tz="UTC")
    ok = ok_row(
        "a",
        path="/data/a.m4a",
        expiration=expires,
        duration=1.5,
        size_bytes=10,
        sha256="0" * 64,
        md5="0" * 32,
        content_type="audio/mp4",
    )
    failed = error_row("b", "404: Recording not found", Kind.NOT_FOUND, expires)
    frame = to_frame([ok, failed, stopped_row("c")])
    assert list(frame.columns) == list(COLUMNS)
    assert frame.dtypes.astype(str).to_dict() == COLUMNS
    assert [succeeded(row) for row in (ok, failed)] == [True, False]
    assert frame.loc[1, "expiration"] == expires
    assert frame.loc[2, "error_kind"] == Kind.STOPPED
    assert [is_stopped(row) for row in frame.to_dict("records")] == [False, False, True]
    assert succeeded(frame.iloc[0].to_dict())  # pandas' missing value, not None


def test_a_kind_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="unknown error kind"):
        error_row("a", "boom", "oops")
    with pytest.raises(ValueError, match="unknown error kind"):
        with_error({"recording_id": "a"}, "boom", "oops")


def test_a_filtered_frame_keeps_its_rows():
    """A frame selected with a mask has gaps in its index: the rows must not shift."""
    frame = to_frame([{"recording_id": key} for key in "abcd"])
    kept = to_frame(frame[frame["recording_id"] != "b"])
    assert kept["recording_id"].tolist() == ["a", "c", "d"]
