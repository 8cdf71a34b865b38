"""What a manifest says, for people: counts, failures by kind, hours and bytes of audio.

The CLI prints it, the notebook shows it, and the panel and the log lines use
the same words and units: a row is ``ok``, ``failed`` or ``stopped`` (not
reached: run again to resume, never a failure), or a tombstone (``deleted`` in
Siro, ``expired`` by the retention rule: never a failure either), and bytes are counted in
powers of 1000 (kB, MB, GB), as download rates are.
"""

from __future__ import annotations

import pandas as pd

from .rows import Status

#: Decimal units, as network rates are counted: 1 MB is 1,000,000 bytes.
UNITS = ("kB", "MB", "GB", "TB")


def summarize(manifest: pd.DataFrame) -> str:
    """A few lines for people: counts, errors by kind with an example, hours of audio.

    Rows a stopped run did not reach are counted apart, as ``stopped``: they
    are not failures, and the next run fetches them.

    Examples
    --------
    >>> from siro_data.rows import stopped_row, to_frame
    >>> print(summarize(to_frame([{"recording_id": "a", "duration": 5400.0, "size_bytes": 10},
    ...                           {"recording_id": "b", "error": "404: Recording not found",
    ...                            "error_kind": "not_found"},
    ...                           stopped_row("c")])))
    3 recordings: 1 ok, 1 failed, 1 stopped (not fetched: run again to resume)
      not_found: 1 (e.g. 'b': 404: Recording not found)
    audio: 1.50 hours in 10 bytes
    """
    status = manifest["status"]
    ok = manifest[status.eq(Status.OK).to_numpy(dtype=bool)]
    failed = manifest[status.eq(Status.FAILED).to_numpy(dtype=bool)]
    stopped = int(status.eq(Status.STOPPED).sum())
    gone = len(manifest) - len(ok) - len(failed) - stopped
    lines = [counts_line(len(manifest), len(ok), len(failed), stopped, gone)]
    for kind, group in failed.groupby(failed["error_kind"].fillna("error"), sort=True):
        example = group.iloc[0]
        lines.append(
            f"  {kind}: {len(group)} (e.g. {example['recording_id']!r}: {example['error']})"
        )
    hours = ok["duration"].sum() / 3600
    lines.append(f"audio: {hours:.2f} hours in {human_bytes(int(ok['size_bytes'].sum()))}")
    return "\n".join(lines)


def counts_line(total: int, ok: int, failed: int, stopped: int, tombstones: int = 0) -> str:
    """``12 recordings: 10 ok, 2 failed``, with the stopped ones and the tombstones (deleted
    in Siro, expired by the retention rule) when there are any.

    Examples
    --------
    >>> counts_line(12, 2, 0, 10)
    '12 recordings: 2 ok, 0 failed, 10 stopped (not fetched: run again to resume)'
    >>> counts_line(3, 2, 0, 0, 1)
    '3 recordings: 2 ok, 0 failed, 1 deleted or expired (not fetched again)'
    """
    line = f"{total} recordings: {ok} ok, {failed} failed"
    if stopped:
        line += f", {stopped} stopped (not fetched: run again to resume)"
    if tombstones:
        line += f", {tombstones} deleted or expired (not fetched again)"
    return line


def human_bytes(count: float) -> str:
    """``512 bytes``, ``2.0 kB``, ``1.8 MB``, ``3.2 GB`` (powers of 1000).

    Examples
    --------
    >>> human_bytes(999), human_bytes(1_840_000), human_bytes(2.5e9)
    ('999 bytes', '1.8 MB', '2.5 GB')
    """
    if count < 1000:
        return f"{int(count)} bytes"
    value = float(count)
    for unit in UNITS:
        value /= 1000
        if value < 1000 or unit == UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def megabytes(count: float) -> str:
    """``12.3 MB``: a live counter keeps one unit, so its digits do not jump.

    Examples
    --------
    >>> megabytes(2_000_000)
    '2.0 MB'
    """
    return f"{count / 1e6:.1f} MB"


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``.

    Examples
    --------
    >>> duration_text(42.4), duration_text(185), duration_text(7620)
    ('42 s', '3 min 05 s', '2 h 07 min')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
