"""From raw text fields to typed canonical interaction rows, with the quarantine for what does not parse.

The string work on interaction columns (strip, regex checks, number parsing) runs in Arrow's C++
kernels: these columns hold every interaction of a source, so no Python loop touches them per row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.data.sources.sink import TableSink

def line_text(row: bytes | str) -> str:
    """An original line as text for the quarantine (bytes that are not utf-8 shown as \\x escapes)."""
    text = row.decode("utf-8", errors="backslashreplace") if isinstance(row, bytes) else row
    return text.rstrip("\r\n")


def row_text(frame: pd.DataFrame, sep: str) -> list[str]:
    """Rows as text for the quarantine: the original line where the reader kept it (`_row`), else fields joined."""
    if "_row" in frame:
        return [line_text(r) for r in frame["_row"]]
    fields = frame[[c for c in frame.columns if not str(c).startswith("_")]]
    return [sep.join("" if v is None else str(v) for v in row) for row in fields.itertuples(index=False)]


_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NULL_TEXT = pa.scalar(None, pa.string())


def arrow_text(series: pd.Series) -> pa.Array:
    """Values as stripped Arrow strings, '' where missing; numbers (JSON, Parquet) as their text."""
    if series.dtype != object and not isinstance(series.dtype, (pd.ArrowDtype, pd.StringDtype)):
        text = pa.array(series, from_pandas=True).cast(pa.string())
    else:
        try:
            text = pa.array(series, type=pa.string(), from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # mixed objects, e.g. a JSON id given as a number
            text = pa.array([None if v is None or v != v else str(v) for v in series], type=pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(text), "")


def _numbers(text: pa.Array) -> np.ndarray:
    """Float values of number-like strings, NaN for the rest."""
    numeric = pc.match_substring_regex(text, _NUMBER)
    return pc.cast(pc.if_else(numeric, text, _NULL_TEXT), pa.float64()).to_numpy(zero_copy_only=False)


def _bool(mask: pa.Array) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False).astype(bool)


def to_seconds(series: pd.Series, unit: str) -> np.ndarray:
    """Float seconds since the epoch (NaN where unreadable) from numbers in `unit`, ISO strings or datetimes."""
    if pd.api.types.is_datetime64_any_dtype(series) or unit == "iso":
        stamps = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
        return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        numbers = series.to_numpy(dtype=float, na_value=np.nan)
    else:
        numbers = _numbers(arrow_text(series))
    return numbers / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]


# Seconds beyond ±1e13 (year ~300,000) are corrupt values, and would overflow int64 nanoseconds downstream.
_MAX_SECONDS = 1e13
_CANONICAL = ("user_id", "item_id", "timestamp", "value", "event")


def clean_interactions(raw: pd.DataFrame, *, sink: TableSink, table: str, sep: str, event: str,
                       numeric_ids: bool = False, unit: str = "s") -> pd.DataFrame:
    """Canonical interaction rows from `raw` (user_id, item_id, timestamp, optional value and event).

    Rows with a missing or malformed field are quarantined with the first reason that applies; the
    rest come back typed: ids str, timestamp int64 seconds, value float64 (1.0 without a value column).
    Other columns (not starting with `_`) pass through as context.
    """
    user, item = arrow_text(raw["user_id"]), arrow_text(raw["item_id"])
    seconds = to_seconds(raw["timestamp"], unit)
    checks = [(_bool(pc.equal(user, "")), "missing user_id"), (_bool(pc.equal(item, "")), "missing item_id")]
    if numeric_ids:
        checks += [(~_bool(pc.match_substring_regex(user, r"^\d+$")), "non-numeric user_id"),
                   (~_bool(pc.match_substring_regex(item, r"^\d+$")), "non-numeric item_id")]
    stamps = raw["timestamp"]
    typed = pd.api.types.is_numeric_dtype(stamps) or pd.api.types.is_datetime64_any_dtype(stamps)
    blank = np.zeros(len(raw), bool) if typed else _bool(pc.equal(arrow_text(stamps), ""))
    checks += [(blank, "missing timestamp"), (np.isnan(seconds), "non-numeric timestamp"),
               (np.abs(seconds) > _MAX_SECONDS, "timestamp out of range")]
    value = None
    if "value" in raw:
        value_text = arrow_text(raw["value"])
        value = _numbers(value_text)
        checks += [(_bool(pc.equal(value_text, "")), "missing rating"), (~np.isfinite(value), "non-numeric rating")]
    reasons = np.select([mask for mask, _ in checks], [reason for _, reason in checks], default="")
    bad = reasons != ""
    if bad.any():
        sink.quarantine(table, reasons[bad].tolist(), row_text(raw.loc[bad], sep))
    keep = pa.array(~bad)
    events = (pc.if_else(pc.equal(text := arrow_text(raw["event"]), ""), event, text).filter(keep)
              if "event" in raw else pa.repeat(event, int(keep.true_count)))
    out = pd.DataFrame({
        "user_id": pd.arrays.ArrowExtensionArray(user.filter(keep)),
        "item_id": pd.arrays.ArrowExtensionArray(item.filter(keep)),
        "timestamp": np.floor(seconds[~bad]).astype(np.int64),
        "event": pd.arrays.ArrowExtensionArray(events),
        "value": 1.0 if value is None else value[~bad],
    })
    for column in raw.columns:
        if column not in _CANONICAL and not str(column).startswith("_"):
            out[column] = raw.loc[~bad, column].to_numpy()
    return out
