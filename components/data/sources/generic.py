"""Any CSV or Parquet interaction log, with optional items and users files, mapped by `ingest.generic`.

`ingest.generic.interactions|items|users` are file names relative to `ingest.path` when it is a
folder; when `ingest.path` is a file it is the interactions file. The format follows the extension
(.parquet, else CSV with a header). `generic.columns` names the source column of each canonical
field; timestamps are numbers in `timestamp_unit` (s, ms, us, ns) or ISO strings (`iso`); without a
timestamp column the row order stands in (synthetic). Items: title, text and categories (split on
`category_separator`) by the same mapping, every other column kept as an attribute; users: every
column other than the id is an attribute.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.config import GenericSource, IngestConfig
from components.data.sources.cleaning import clean_interactions, row_text
from components.data.sources.readers import csv_header, read_csv, require_columns
from components.data.sources.sink import SourceInfo, TableSink
from components.errors import RecloopError


def _resolve(cfg: IngestConfig, name: Path | None, what: str) -> Path | None:
    base = Path(cfg.path)
    if name is None:
        return base if what == "interactions" and base.is_file() else None
    path = name if name.is_absolute() or base.is_file() else base / name
    if not path.is_file():
        raise RecloopError(f"generic {what} file {path} does not exist (ingest.generic.{what})")
    return path


def _chunks(path: Path, required: Sequence[str], optional: Sequence[str], cfg: IngestConfig, sink: TableSink,
            table: str) -> Iterator[pd.DataFrame]:
    """Chunks of the wanted columns; CSV columns arrive as text, Parquet columns keep their types."""
    if path.suffix != ".parquet":
        yield from read_csv(path, required, optional, sink=sink, table=table, chunk_rows=cfg.chunk_rows)
        return
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    require_columns(path, names, required)
    wanted = [c for c in names if c in required or c in optional]
    for batch in parquet.iter_batches(batch_size=cfg.chunk_rows, columns=wanted):
        yield batch.to_pandas()


def _all_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).schema_arrow.names
    return csv_header(path)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed text columns (from CSV) as Python str, for the per-item work on metadata."""
    return frame.astype({c: object for c, t in frame.dtypes.items() if isinstance(t, pd.ArrowDtype)})


def _integral(series: pd.Series) -> pd.Series:
    """Float ids (a Parquet int column with nulls) as integers, so that 12345678901.0 reads 12345678901."""
    if pd.api.types.is_float_dtype(series):
        try:
            return series.astype("Int64")
        except (TypeError, ValueError):  # not whole numbers: keep them as they are
            return series
    return series


def _as_ids(series: pd.Series) -> pd.Series:
    """Ids as Python str (None where missing)."""
    series = _integral(series)
    return series.astype("string").astype(object).where(series.notna(), None)


def _with_ids(raw: pd.DataFrame, column: str, sink: TableSink, table: str) -> tuple[pd.DataFrame, pd.Series]:
    """Rows that have an id in `column` (as text), the others quarantined."""
    ids = _as_ids(raw[column])
    missing = (ids.isna() | (ids.fillna("").str.strip() == "")).to_numpy()
    if missing.any():
        sink.quarantine(table, f"missing {column}", row_text(raw.loc[missing], ","))
    return raw.loc[~missing], ids.loc[~missing].str.strip()


def _interactions(path: Path, g: GenericSource, cfg: IngestConfig, sink: TableSink) -> None:
    c = g.columns
    mapping = {"user_id": c.user_id, "item_id": c.item_id, "timestamp": c.timestamp, "value": c.value,
               "event": c.event}
    mapping = {k: v for k, v in mapping.items() if v}
    row = 0
    for raw in _chunks(path, list(mapping.values()), (), cfg, sink, "interactions"):
        raw = pd.DataFrame({k: raw[v] for k, v in mapping.items()})
        raw["user_id"], raw["item_id"] = _integral(raw["user_id"]), _integral(raw["item_id"])
        if "timestamp" not in raw:
            raw["timestamp"] = np.arange(row, row + len(raw))
            row += len(raw)
        sink.interactions(clean_interactions(raw, sink=sink, table="interactions", sep=",", event=g.default_event,
                                             unit="s" if not c.timestamp else g.timestamp_unit))


def _items(path: Path, g: GenericSource, cfg: IngestConfig, sink: TableSink) -> None:
    c = g.columns
    header = _all_columns(path)
    mapped = {c.item_id, c.title, c.text, c.categories}
    for raw in _chunks(path, [c.item_id], header, cfg, sink, "items"):
        raw = _plain(raw)
        raw, ids = _with_ids(raw, c.item_id, sink, "items")
        title = raw[c.title].astype(object) if c.title in raw else ids
        categories = (raw[c.categories].fillna("").astype(str).str.split(g.category_separator, regex=False)
                      .map(lambda cs: [x.strip() for x in cs if x.strip()])
                      if c.categories in raw else pd.Series([[] for _ in range(len(raw))], index=raw.index))
        sink.items(pd.DataFrame({
            "item_id": ids, "title": title.where(title.notna() & (title != ""), ids),
            "text": raw[c.text].fillna("").astype(str) if c.text in raw else "",
            "categories": categories,
            **{name: raw[name] for name in raw.columns if name not in mapped}}))


def _users(path: Path, g: GenericSource, cfg: IngestConfig, sink: TableSink) -> None:
    user = g.columns.user_id
    for raw in _chunks(path, [user], _all_columns(path), cfg, sink, "users"):
        raw = _plain(raw)
        raw, ids = _with_ids(raw, user, sink, "users")
        sink.users(pd.DataFrame({"user_id": ids, **{n: raw[n] for n in raw.columns if n != user}}))


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest a CSV/Parquet interaction log (+ items, users) through the column mapping in `cfg.generic`."""
    g = cfg.generic
    interactions = _resolve(cfg, g.interactions, "interactions")
    if interactions is None:
        raise RecloopError(f"ingest.path {cfg.path} is a folder: set ingest.generic.interactions to the "
                           "interactions file inside it")
    _interactions(interactions, g, cfg, sink)
    info = SourceInfo(dataset=interactions.name.split(".")[0])
    if not g.columns.timestamp:
        info.synthetic_timestamps = True
        info.notes.append("timestamps are synthetic: there is no timestamp column, so the row number stands in.")
    if (items := _resolve(cfg, g.items, "items")) is not None:
        _items(items, g, cfg, sink)
    if (users := _resolve(cfg, g.users, "users")) is not None:
        _users(users, g, cfg, sink)
    return info
