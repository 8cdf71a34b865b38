"""What a manifest says, for people: counts, failures by kind, hours and bytes of audio.

The CLI prints it, the notebook shows it, and the panel uses the same units.
"""

from __future__ import annotations

import math

import pandas as pd


def summarize(manifest: pd.DataFrame) -> str:
    """A few lines for people: counts, errors by kind with an example, hours of audio.

    Examples
    --------
    >>> from siro_data.rows import to_frame
    >>> print(summarize(to_frame([{"recording_id": "a", "duration": 5400.0, "size_bytes": 10},
    ...                           {"recording_id": "b", "error": "404: Recording not found",
    ...                            "error_kind": "not_found"}])))
    2 recordings: 1 ok, 1 failed
      not_found: 1 (e.g. 'b': 404: Recording not found)
    audio: 1.50 hours in 10 bytes
    """
    failed = manifest[manifest["error"].notna()]
    lines = [f"{len(manifest)} recordings: {len(manifest) - len(failed)} ok, {len(failed)} failed"]
    for kind, group in failed.groupby(failed["error_kind"].fillna("error"), sort=True):
        example = group.iloc[0]
        lines.append(
            f"  {kind}: {len(group)} (e.g. {example['recording_id']!r}: {example['error']})"
        )
    ok = manifest[manifest["error"].isna()]
    hours = ok["duration"].sum() / 3600
    lines.append(f"audio: {hours:.2f} hours in {_human_bytes(int(ok['size_bytes'].sum()))}")
    return "\n".join(lines)


def _human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    exponent = min(int(math.log(count, 1024)), 4)
    return f"{count / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"
