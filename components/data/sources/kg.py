"""A knowledge graph about the catalog's items: typed triples plus the links from item ids to entities.

Two formats (`kg.format`), each two files inside `kg.path` (`kg.triples`, `kg.links`):
- `mkr`, as published with MKR / RippleNet / KGCN (`kg.txt`, `item_index2entity_id.txt`):
  tab-separated, no header; triples are `head<TAB>relation<TAB>tail`, links `item id<TAB>entity`.
- `generic`: CSV, TSV (by extension) or Parquet with a header; triples have the columns `head`,
  `relation`, `tail`, links `item_id`, `entity`. Any other columns are ignored.

Entities are opaque strings (the MKR graphs' are anonymous numbers), item ids are the canonical
`item_id`s. Everything is read as text; `validation/kg.py` decides which rows to keep.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.config import KGConfig
from components.data.schema import KG_LINK_COLUMNS, KG_TRIPLE_COLUMNS
from components.errors import RecloopError



@dataclass
class KnowledgeGraph:
    """Triples (head, relation, tail) and item links (item_id, entity), every column text."""

    triples: pd.DataFrame
    links: pd.DataFrame

    @property
    def relations(self) -> list[str]:
        return sorted(self.triples["relation"].unique())


def _text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns as stripped Python strings, empty values as None (the validation's null rule sees them)."""
    out = frame[columns].astype(object)
    for c in columns:
        stripped = out[c].map(lambda v: None if v is None or pd.isna(v) else str(v).strip())
        out[c] = stripped.map(lambda v: v or None)
    return out.reset_index(drop=True)


def _read(path: Path, columns: list[str], fmt: str) -> pd.DataFrame:
    if not path.is_file():
        raise RecloopError(f"knowledge-graph file {path} does not exist (kg.path, kg.triples / kg.links)")
    if fmt == "mkr":
        frame = pd.read_csv(path, sep="\t", header=None, names=columns, usecols=range(len(columns)),
                            dtype=str, keep_default_na=False)
    elif path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",", dtype=str,
                            keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RecloopError(f"{path} lacks the columns {missing} (a {fmt} knowledge graph has {columns})")
    return _text(frame, columns)


def read_kg(cfg: KGConfig) -> KnowledgeGraph:
    """The raw graph named by `cfg` (kg.path must be set)."""
    if cfg.path is None:
        raise RecloopError("kg.path is null: name the folder holding the knowledge graph's triples and links")
    base = Path(cfg.path)
    return KnowledgeGraph(triples=_read(base / cfg.triples, KG_TRIPLE_COLUMNS, cfg.format),
                          links=_read(base / cfg.links, KG_LINK_COLUMNS, cfg.format))
