"""UniSRec-style benchmark splits (RecBole's sequential format), e.g. UniSRec's Amazon "Scientific".

`<name>.{train,valid,test}.inter` rows are `user \t history \t target` in dense indices: train holds
every prefix of each user's training sequence, valid and test one row per user, and histories keep
at most the last 50 items. `<name>.item2index` / `<name>.user2index` map indices back to ASINs and
reviewer ids; `<name>.text` holds `ASIN \t text`. Each user's full sequence is rebuilt, checked
against its valid and test histories, and given synthetic increasing timestamps (its position, in
seconds from 0): the source keeps only the order. The source's split is kept in column `split`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.config import IngestConfig
from components.data.sources.cleaning import clean_interactions
from components.data.sources.readers import dataset_files, find_file, read_lines, split_fields
from components.data.sources.sink import SourceInfo, TableSink


def _index_map(path: Path, cfg: IngestConfig, sink: TableSink) -> pd.Series:
    """`raw_id \t index` lines -> Series raw_id indexed by the index (as str)."""
    parts = [split_fields(lines, "\t", ["raw", "index"], sink=sink, table=path.name)
             for lines in read_lines(path, sink=sink, table=path.name, chunk_rows=cfg.chunk_rows)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"raw": [], "index": []})
    return pd.Series(frame["raw"].str.strip().to_numpy(), index=frame["index"].str.strip().to_numpy())


def _lines(rows: pd.DataFrame) -> list[str]:
    return ["\t".join(r) for r in rows[["user", "history", "target"]].itertuples(index=False)]


def _inter_rows(path: Path, cfg: IngestConfig, sink: TableSink) -> pd.DataFrame:
    """user, history (space-separated indices), target, and the row's position in the file."""
    table = path.name
    parts = []
    for lines in read_lines(path, sink=sink, table=table, chunk_rows=cfg.chunk_rows, skip_header=True):
        rows = split_fields(lines, "\t", ["user", "history", "target"], sink=sink, table=table)
        rows = rows.apply(lambda c: c.str.strip())
        ok = (rows["user"].str.fullmatch(r"\d+") & rows["target"].str.fullmatch(r"\d+")
              & rows["history"].str.fullmatch(r"\d+( \d+)*")).to_numpy(dtype=bool)
        if (~ok).any():
            sink.quarantine(table, "non-numeric index", _lines(rows.loc[~ok]))
        parts.append(rows.loc[ok])
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["user", "history", "target"])
    return rows.assign(pos=np.arange(len(rows)), length=rows["history"].str.count(" ") + 1)


def _train_sequences(train: pd.DataFrame) -> pd.DataFrame:
    """Each user's training sequence (user, item, order): the shortest prefix's history, then the targets.

    Targets are ordered by prefix length; equal lengths (histories cut at the maximum) by reverse file
    order, since the files list each user's prefixes longest first.
    """
    train = train.sort_values(["user", "length", "pos"], ascending=[True, True, False])
    first = train.drop_duplicates("user")
    head = first.assign(item=first["history"].str.split()).explode("item")[["user", "item"]]
    return pd.concat([head, train[["user", "target"]].rename(columns={"target": "item"})], ignore_index=True)


def _sequence_text(sequences: pd.DataFrame) -> pd.Series:
    return sequences.groupby("user", sort=False)["item"].agg(" ".join)


def _agrees(rows: pd.DataFrame, base: pd.Series) -> np.ndarray:
    """Whether each row's history is the end of the user's sequence so far (histories may be cut)."""
    before = rows["user"].map(base).fillna("")
    return np.array([f" {b}".endswith(f" {h}") for b, h in zip(before, rows["history"])], dtype=bool)


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest a UniSRec-style benchmark: full sequences rebuilt from the prefix splits, split kept."""
    folder, name = dataset_files(cfg, ".train.inter")
    paths = {part: find_file(folder, [f"{name}.{part}.inter"], f"UniSRec {part} split")
             for part in ("train", "valid", "test")}
    items = _index_map(find_file(folder, [f"{name}.item2index"], "item index map"), cfg, sink)
    users = _index_map(find_file(folder, [f"{name}.user2index"], "user index map"), cfg, sink)
    train, valid, test = (_inter_rows(paths[p], cfg, sink) for p in ("train", "valid", "test"))

    sequences = _train_sequences(train).assign(split="train")
    # A user without training prefixes starts from the validation history.
    lonely = valid[~valid["user"].isin(sequences["user"])]
    sequences = pd.concat([sequences, lonely.assign(item=lonely["history"].str.split(), split="train")
                           .explode("item")[["user", "item", "split"]]], ignore_index=True)
    for part, rows in (("valid", valid), ("test", test)):
        repeated = rows["user"].duplicated().to_numpy()
        if repeated.any():
            sink.quarantine(paths[part].name, "second row for the user", _lines(rows.loc[repeated]))
        rows = rows.loc[~repeated]
        ok = _agrees(rows, _sequence_text(sequences))
        if (~ok).any():
            sink.quarantine(paths[part].name, "history differs from the rebuilt sequence",
                            _lines(rows.loc[~ok]))
        sequences = pd.concat([sequences, rows.loc[ok, ["user", "target"]].rename(columns={"target": "item"})
                               .assign(split=part)], ignore_index=True)

    sequences["timestamp"] = sequences.groupby("user", sort=False).cumcount()
    sequences = sequences.sort_values(["user", "timestamp"], key=lambda c: c.astype(int) if c.name == "user" else c)
    raw = pd.DataFrame({"user_id": sequences["user"].map(users), "item_id": sequences["item"].map(items),
                        "timestamp": sequences["timestamp"], "split": sequences["split"],
                        "_row": sequences["user"] + "\t" + sequences["item"]})
    unknown = raw["user_id"].isna() | raw["item_id"].isna()
    if unknown.any():
        sink.quarantine("interactions", "index not in user2index/item2index", raw.loc[unknown, "_row"].tolist())
    sink.interactions(clean_interactions(raw.loc[~unknown], sink=sink, table="interactions", sep="\t",
                                         event="interaction"))
    _items(folder, name, items, cfg, sink)
    sink.bare_users(users.to_numpy())
    notes = ["timestamps are synthetic: each user's position in its sequence, in seconds from 1970-01-01 "
             "(the source keeps only the order; set validate.min_timestamp=0).",
             "The split is given: column `split` holds train/valid/test (split.mode=given)."]
    return SourceInfo(dataset=name, synthetic_timestamps=True, given_split=True,
                      counts={"train_prefixes": len(train)}, notes=notes)


def _items(folder: Path, name: str, items: pd.Series, cfg: IngestConfig, sink: TableSink) -> None:
    """Items of item2index; their `.text` (title. categories. brand.) split at the first '. ' into title, text."""
    text_path = folder / f"{name}.text"
    if text_path.is_file():
        for lines in read_lines(text_path, sink=sink, table="items", chunk_rows=cfg.chunk_rows, skip_header=True):
            rows = split_fields(lines, "\t", ["item_id", "text"], sink=sink, table="items")
            parts = rows["text"].str.strip().str.partition(". ")
            sink.items(pd.DataFrame({"item_id": rows["item_id"].str.strip(), "title": parts[0].str.strip(),
                                     "text": parts[2].str.strip(), "categories": [[] for _ in range(len(rows))]}))
    sink.bare_items(items.to_numpy())
