"""The canonical tables every source adapter produces and every later stage reads.

interactions: user_id (str), item_id (str), timestamp (int64 seconds), event (str), value (float),
              domain (str), plus optional context columns (for example `split` when a source ships
              its own train/valid/test assignment).
items:        item_id, title, text, categories (list of str), domain, plus optional attributes.
users:        user_id, plus optional attributes (age, gender, occupation, region...).
kg triples:   head, relation, tail (str); kg links: item_id, entity (str) — a validated knowledge graph.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic import replaced

INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "event", "value", "domain"]
ITEM_COLUMNS = ["item_id", "title", "text", "categories", "domain"]
USER_COLUMNS = ["user_id"]
KG_TRIPLE_COLUMNS = ["head", "relation", "tail"]
KG_LINK_COLUMNS = ["item_id", "entity"]

INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
KG_TRIPLES_FILE = "triples.parquet"
KG_LINKS_FILE = "links.parquet"
USERS_FILE = "users.parquet"
QUARANTINE_FILE = "quarantine.parquet"
QUARANTINE_COLUMNS = ["table", "reason", "row"]


def empty_items() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ITEM_COLUMNS})


def empty_users() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=object)})


def quarantine_frame(table: str, reason: str | pd.Series, rows: pd.DataFrame | list[str]) -> pd.DataFrame:
    """Rejected rows with the reason: `row` keeps the original content as text so nothing is lost."""
    if isinstance(rows, pd.DataFrame):
        raw = rows.astype(str).to_dict(orient="records")
        raw = [repr(r) for r in raw]
    else:
        raw = list(rows)
    reasons = reason if isinstance(reason, pd.Series) else [reason] * len(raw)
    return pd.DataFrame({"table": [table] * len(raw), "reason": list(reasons), "row": raw})


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a table."""
    with replaced(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)
