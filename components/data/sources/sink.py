"""Where a source adapter puts what it read: each canonical table streams to Parquet as it arrives.

An adapter calls `interactions()` with each chunk first, then `items()` and `users()`, and
`quarantine()` for anything it could not parse. `finish()` completes the catalog (every item and
user id seen in interactions gets a row, with the id as title when the source has no metadata for
it) and returns the counts the ingest report needs. Memory stays at one chunk plus the id sets.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.schema import INTERACTIONS_FILE, ITEMS_FILE, QUARANTINE_FILE, USERS_FILE

_INTERACTION_TYPES = {"user_id": pa.string(), "item_id": pa.string(), "timestamp": pa.int64(),
                      "event": pa.string(), "value": pa.float64(), "domain": pa.string()}
_ITEM_TYPES = {"item_id": pa.string(), "title": pa.string(), "text": pa.string(),
               "categories": pa.list_(pa.string()), "domain": pa.string()}
_USER_TYPES = {"user_id": pa.string()}
_QUARANTINE_SCHEMA = pa.schema([("table", pa.string()), ("reason", pa.string()), ("row", pa.string())])


@dataclass
class SourceInfo:
    """What an adapter tells the report beyond the tables: the dataset's name, notes, extra counts."""

    dataset: str
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    synthetic_timestamps: bool = False
    given_split: bool = False
    # The items the source listed are all the items there are (a full catalog file was read).
    complete_catalog: bool = False


@dataclass
class SinkStats:
    interactions: int
    users: int
    items: int
    users_with_interactions: int
    items_with_interactions: int
    items_without_metadata: int
    duplicate_items: int
    duplicate_users: int
    quarantined: Counter
    time_min: int | None
    time_max: int | None


class _Writer:
    """A Parquet file appended chunk by chunk; the schema is fixed by the canonical types + the first chunk."""

    def __init__(self, path: Path, types: dict[str, pa.DataType]) -> None:
        self.path, self.types = path, types
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    def _schema_for(self, frame: pd.DataFrame) -> pa.Schema:
        inferred = pa.Table.from_pandas(frame, preserve_index=False).schema
        fields = [pa.field(name, self.types[name]) for name in self.types]
        for f in inferred:
            if f.name not in self.types:
                fields.append(pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type))
        return pa.schema(fields)

    def write(self, frame: pd.DataFrame) -> None:
        if self.schema is None:
            self.schema = self._schema_for(frame)
            self._writer = pq.ParquetWriter(self.path, self.schema)
        frame = frame.reindex(columns=self.schema.names)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))

    def close(self) -> None:
        """Finish the file (an empty one when nothing came); closing twice changes nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self.schema is None:
            self.schema = pa.schema([pa.field(n, t) for n, t in self.types.items()])
            pq.write_table(self.schema.empty_table(), self.path)


class TableSink:
    """Streams the canonical tables into `folder` and counts what went where."""

    def __init__(self, folder: Path, domain: str, only_interacted: bool = False) -> None:
        self.folder, self.domain, self.only_interacted = Path(folder), domain, only_interacted
        self._interactions = _Writer(self.folder / INTERACTIONS_FILE, _INTERACTION_TYPES)
        self._items = _Writer(self.folder / ITEMS_FILE, _ITEM_TYPES)
        self._users = _Writer(self.folder / USERS_FILE, _USER_TYPES)
        self._quarantine = pq.ParquetWriter(self.folder / QUARANTINE_FILE, _QUARANTINE_SCHEMA)
        self._closed = False
        self.n_interactions = 0
        self.time_min: int | None = None
        self.time_max: int | None = None
        self.interacted_users: set[str] = set()
        self.interacted_items: set[str] = set()
        self.item_ids: set[str] = set()
        self.user_ids: set[str] = set()
        self.duplicate_items = 0
        self.duplicate_users = 0
        self.quarantined: Counter = Counter()

    def __enter__(self) -> "TableSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interactions(self, frame: pd.DataFrame) -> None:
        """A chunk with user_id, item_id, timestamp, event, value (+ context columns); domain is added here."""
        if not len(frame):
            return
        frame = frame.assign(domain=pd.arrays.ArrowExtensionArray(pa.repeat(self.domain, len(frame))))
        self._interactions.write(frame)
        self.n_interactions += len(frame)
        lo, hi = int(frame["timestamp"].min()), int(frame["timestamp"].max())
        self.time_min = lo if self.time_min is None else min(self.time_min, lo)
        self.time_max = hi if self.time_max is None else max(self.time_max, hi)
        self.interacted_users.update(frame["user_id"].unique())
        self.interacted_items.update(frame["item_id"].unique())

    def _new_rows(self, frame: pd.DataFrame, key: str, seen: set[str], interacted: set[str]) -> pd.DataFrame:
        """Rows whose id is new (the first row of an id wins); repeats are counted, not written."""
        fresh = (~frame[key].duplicated() & ~frame[key].isin(seen)).to_numpy()
        repeats = int(len(frame) - fresh.sum())
        if key == "item_id":
            self.duplicate_items += repeats
        else:
            self.duplicate_users += repeats
        frame = frame.loc[fresh]
        if self.only_interacted:
            frame = frame.loc[frame[key].isin(interacted)]
        seen.update(frame[key])
        return frame

    def items(self, frame: pd.DataFrame) -> None:
        """A chunk with item_id, title, text, categories (list of str) and optional attribute columns."""
        frame = self._new_rows(frame, "item_id", self.item_ids, self.interacted_items)
        if len(frame):
            title = frame["title"].where(frame["title"].notna() & (frame["title"] != ""), frame["item_id"])
            self._items.write(frame.assign(title=title, text=frame["text"].fillna(""), domain=self.domain))

    def users(self, frame: pd.DataFrame) -> None:
        """A chunk with user_id and optional attribute columns (age, gender, occupation, ...)."""
        frame = self._new_rows(frame, "user_id", self.user_ids, self.interacted_users)
        if len(frame):
            self._users.write(frame)

    def quarantine(self, table: str, reason: str | Sequence[str], rows: Sequence[str]) -> None:
        """Rows that could not be parsed, as their original text, with why."""
        rows = list(rows)
        if not rows:
            return
        reasons = [reason] * len(rows) if isinstance(reason, str) else list(reason)
        self._quarantine.write_table(pa.table({"table": [table] * len(rows), "reason": reasons, "row": rows},
                                              schema=_QUARANTINE_SCHEMA))
        self.quarantined.update(f"{table}: {r}" for r in reasons)

    def bare_items(self, ids: Sequence[str]) -> int:
        """A row (the id as title, no text) for each of `ids` that has none yet; returns how many were added."""
        missing = sorted(set(ids) - self.item_ids)
        if self.only_interacted:
            missing = [i for i in missing if i in self.interacted_items]
        if missing:
            self._items.write(pd.DataFrame({"item_id": missing, "title": missing, "text": "",
                                            "categories": [[] for _ in missing], "domain": self.domain}))
            self.item_ids.update(missing)
        return len(missing)

    def bare_users(self, ids: Sequence[str]) -> int:
        """A row without attributes for each of `ids` that has none yet; returns how many were added."""
        missing = sorted(set(ids) - self.user_ids)
        if self.only_interacted:
            missing = [u for u in missing if u in self.interacted_users]
        if missing:
            self._users.write(pd.DataFrame({"user_id": missing}))
            self.user_ids.update(missing)
        return len(missing)

    def quarantine_unknown_items(self) -> int:
        """Move the interactions whose item has no catalog row to the quarantine ("unknown item").

        Only for a complete catalog, and only read back when such rows exist: the interactions file
        is rewritten batch by batch and the counts recomputed from what stays. Returns the rows moved.
        """
        unknown = self.interacted_items - self.item_ids
        if not unknown:
            return 0
        self._interactions.close()
        path = self.folder / INTERACTIONS_FILE
        kept_path = path.with_name(f".{path.name}.known")
        source = pq.ParquetFile(path)
        unknown_ids = pa.array(sorted(unknown), pa.string())
        self.n_interactions, self.time_min, self.time_max = 0, None, None
        self.interacted_users, self.interacted_items = set(), set()
        moved = 0
        with pq.ParquetWriter(kept_path, source.schema_arrow) as out:
            for batch in source.iter_batches(batch_size=500_000):
                bad = pc.is_in(batch["item_id"], value_set=unknown_ids)
                rejected = batch.filter(bad)
                if rejected.num_rows:
                    columns = [rejected[c].to_pylist() for c in ("user_id", "item_id", "timestamp", "event", "value")]
                    self.quarantine("interactions", "unknown item", [",".join(map(str, r)) for r in zip(*columns)])
                    moved += rejected.num_rows
                kept = batch.filter(pc.invert(bad))
                out.write_batch(kept)
                if kept.num_rows:
                    self._count(kept["user_id"], kept["item_id"], kept["timestamp"])
        kept_path.replace(path)
        return moved

    def _count(self, users: pa.Array, items: pa.Array, stamps: pa.Array) -> None:
        self.n_interactions += len(users)
        lo, hi = pc.min_max(stamps).values()
        self.time_min = lo.as_py() if self.time_min is None else min(self.time_min, lo.as_py())
        self.time_max = hi.as_py() if self.time_max is None else max(self.time_max, hi.as_py())
        self.interacted_users.update(pc.unique(users).to_pylist())
        self.interacted_items.update(pc.unique(items).to_pylist())

    def finish(self) -> SinkStats:
        """Give every interacted id without a row a fallback row, close the files, return the counts."""
        items_without_metadata = self.bare_items(self.interacted_items)
        self.bare_users(self.interacted_users)
        self.close()
        return SinkStats(
            interactions=self.n_interactions, users=len(self.user_ids), items=len(self.item_ids),
            users_with_interactions=len(self.interacted_users), items_with_interactions=len(self.interacted_items),
            items_without_metadata=items_without_metadata, duplicate_items=self.duplicate_items,
            duplicate_users=self.duplicate_users, quarantined=self.quarantined,
            time_min=self.time_min, time_max=self.time_max)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for writer in (self._interactions, self._items, self._users):
            writer.close()
        self._quarantine.close()
