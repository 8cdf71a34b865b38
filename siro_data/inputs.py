"""What a run is given, checked before any request: ids, settings, folders.

Both run paths (one machine, a Dask cluster) call these, so that bad input
fails the same clear way, with a ``ValueError`` naming what is wrong, before
anything is asked of Siro.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .audio import FORMATS

IdsLike = pd.DataFrame | pd.Series | Iterable[Any]


def is_dask(ids: Any) -> bool:
    """A Dask DataFrame or Series (told without importing Dask)."""
    return type(ids).__module__.startswith("dask") and hasattr(ids, "to_delayed")


def id_values(ids: Any, id_column: str = "recording_id") -> Any:
    """The ids themselves: a DataFrame's (pandas or Dask) ``id_column``, else ``ids`` as given."""
    if isinstance(ids, str | bytes):
        raise TypeError("ids must be a DataFrame, a Series or a list of ids, not one string")
    if hasattr(ids, "columns"):
        if id_column not in ids.columns:
            raise ValueError(
                f"no column {id_column!r} in the DataFrame; its columns are {list(ids.columns)}"
                " (pass id_column=...)"
            )
        return ids[id_column]
    return ids


def normalize_ids(ids: IdsLike, id_column: str = "recording_id") -> list[str | None]:
    """Distinct ids as strings (``None`` for a missing one), in input order.

    Examples
    --------
    >>> normalize_ids([12, "12", 7.0, None, float("nan"), "a"])
    ['12', '7', None, 'a']
    """
    return list(dict.fromkeys(_as_id(value) for value in id_values(ids, id_column)))


def id_array(ids: IdsLike, id_column: str = "recording_id") -> pa.Array:
    """:func:`normalize_ids` as one Arrow array: a million ids without a million objects.

    Examples
    --------
    >>> id_array(["a", "b", "a", None]).to_pylist()
    ['a', 'b', None]
    """
    values = id_values(ids, id_column)
    if isinstance(values, pd.Series) and pd.api.types.infer_dtype(values) in ("string", "empty"):
        return pc.unique(pa.array(values, pa.large_string(), from_pandas=True))
    return pa.array(normalize_ids(values), pa.large_string())


def _as_id(value: Any) -> str | None:
    """One id as a string: integral numbers without a decimal point, missing as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def invalid_reason(recording_id: str | None) -> str | None:
    """Why an id cannot be asked for at all, or None when it can.

    Examples
    --------
    >>> invalid_reason(None), invalid_reason("  "), invalid_reason("rec_1")
    ('missing (null)', 'empty', None)
    """
    if recording_id is None:
        return "missing (null)"
    if not recording_id.strip():
        return "empty"
    return None


def check_settings(workers: int, convert_to: str | None) -> None:
    """Refuse bad settings with a clear ``ValueError``, before any request."""
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if convert_to not in (None, *FORMATS):
        raise ValueError(f"convert_to must be one of {(None, *FORMATS)}, got {convert_to!r}")
