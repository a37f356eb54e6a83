"""RecBole's atomic files: `<name>.inter` with a `field:type` header (user_id, item_id, rating,
timestamp), optional `<name>.item` and `<name>.user`, all tab-separated.

Item fields named like a title, categories (token_seq, space-separated) or a description fill those
columns; every other field is an attribute (numeric for `float` fields). Without a timestamp field
the row number stands in (synthetic).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import IngestConfig
from components.data.sources.cleaning import clean_interactions
from components.data.sources.readers import (csv_header, dataset_files, find_file, read_lines, require_columns,
                                             split_fields)
from components.data.sources.sink import SourceInfo, TableSink

_TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
_CATEGORY_FIELDS = ("categories", "class", "genre", "genres", "category")
_TEXT_FIELDS = ("description", "text", "desc")


def _header(path: Path) -> dict[str, str]:
    """`user_id:token\trating:float` -> {"user_id": "token", "rating": "float"}."""
    return dict(f.strip().partition(":")[::2] for f in csv_header(path, "\t"))


def _atomic_table(path: Path, cfg: IngestConfig, sink: TableSink, table: str) -> Iterator[pd.DataFrame]:
    names = list(_header(path))
    for lines in read_lines(path, sink=sink, table=table, chunk_rows=cfg.chunk_rows, skip_header=True):
        yield split_fields(lines, "\t", names, sink=sink, table=table)


def _attributes(frame: pd.DataFrame, fields: dict[str, str], skip: set[str]) -> dict[str, pd.Series]:
    """Remaining columns as attributes: `float` fields numeric, the rest text."""
    return {name: pd.to_numeric(frame[name], errors="coerce") if fields[name] == "float" else frame[name]
            for name in frame.columns if name not in skip}


def read_atomic(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest RecBole atomic files `<name>.inter` (+ `.item`, `.user`)."""
    folder, name = dataset_files(cfg, ".inter")
    inter = find_file(folder, [f"{name}.inter"], "RecBole interaction file")
    info = SourceInfo(dataset=name)
    fields = _header(inter)
    require_columns(inter, list(fields), ["user_id", "item_id"])
    if "timestamp" not in fields:
        info.synthetic_timestamps = True
        info.notes.append("timestamps are synthetic: the .inter file has none, so the row number stands in "
                          "(order kept).")
    row = 0
    for raw in _atomic_table(inter, cfg, sink, "interactions"):
        raw = raw.rename(columns={"rating": "value"})
        if info.synthetic_timestamps:
            raw["timestamp"] = np.arange(row, row + len(raw))
            row += len(raw)
        keep = ["user_id", "item_id", "timestamp"] + (["value"] if "value" in raw else [])
        sink.interactions(clean_interactions(raw[keep], sink=sink, table="interactions", sep="\t",
                                             event="rate" if "value" in raw else "interaction"))
    if (folder / f"{name}.item").is_file():
        fields = _header(folder / f"{name}.item")
        for raw in _atomic_table(folder / f"{name}.item", cfg, sink, "items"):
            title = next((f for f in _TITLE_FIELDS if f in raw), None)
            cats = next((f for f in _CATEGORY_FIELDS if f in raw), None)
            text = next((f for f in _TEXT_FIELDS if f in raw), None)
            sink.items(pd.DataFrame({
                "item_id": raw["item_id"],
                "title": raw[title] if title else raw["item_id"],
                "text": raw[text] if text else "",
                "categories": raw[cats].str.split() if cats else [[] for _ in range(len(raw))],
                **_attributes(raw, fields, {"item_id", title, cats, text})}))
    if (folder / f"{name}.user").is_file():
        fields = _header(folder / f"{name}.user")
        for raw in _atomic_table(folder / f"{name}.user", cfg, sink, "users"):
            sink.users(pd.DataFrame({"user_id": raw["user_id"], **_attributes(raw, fields, {"user_id"})}))
    return info
