"""Extra per-item vector tables (image, audio, pretrained knowledge-graph embeddings) aligned with a catalog.

A table is keyed by item id, one vector per item, all of one width:
- Parquet: an `item_id` column plus either one list column `vector` or several numeric columns (one per dimension);
- NumPy `.npz`: arrays `item_ids` (N,) and `vectors` (N, width).
Items of the catalog the table does not name (or names with a non-finite vector) lack the source:
their row is zero and their mask false, and the item tower gives them nothing from it. Ids the
catalog does not have are ignored, and counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import RecloopError


@dataclass
class VectorTable:
    """(N, width) vectors in catalog order and which rows are present."""

    vectors: np.ndarray
    present: np.ndarray
    unknown_ids: int  # rows of the file whose item the catalog does not have

    @property
    def width(self) -> int:
        return self.vectors.shape[1]


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise RecloopError(f"item vector file {path} does not exist (model.sources.vectors)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "item_ids" not in npz or "vectors" not in npz:
                raise RecloopError(f"{path} must hold the arrays item_ids and vectors")
            return npz["item_ids"].astype(str), np.asarray(npz["vectors"], np.float32)
    if path.suffix != ".parquet":
        raise RecloopError(f"item vector file {path}: expected .parquet or .npz")
    frame = pd.read_parquet(path)
    if "item_id" not in frame:
        raise RecloopError(f"{path} has no item_id column")
    ids = frame["item_id"].astype(str).to_numpy()
    if "vector" in frame:
        return ids, np.stack(frame["vector"].map(lambda v: np.asarray(v, np.float32)).to_numpy())
    numeric = frame.drop(columns="item_id").select_dtypes("number")
    if numeric.shape[1] == 0:
        raise RecloopError(f"{path} has neither a `vector` list column nor numeric columns")
    return ids, numeric.to_numpy(np.float32)


def read_vector_table(path: Path, item_ids: Sequence[str]) -> VectorTable:
    """The table at `path` aligned with `item_ids` (catalog order)."""
    ids, vectors = _read(Path(path))
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise RecloopError(f"{path}: {len(ids)} ids but vectors of shape {vectors.shape}")
    first = ~pd.Index(ids).duplicated()  # an id given twice: its first vector counts
    ids, vectors = ids[first], vectors[first]
    rows = pd.Index(ids).get_indexer(pd.Index(item_ids).astype(str))
    found = rows >= 0
    out = np.zeros((len(item_ids), vectors.shape[1]), np.float32)
    out[found] = vectors[rows[found]]
    present = found & np.isfinite(out).all(1)
    out[~present] = 0.0
    return VectorTable(out, present, int((~pd.Index(ids).isin(pd.Index(item_ids).astype(str))).sum()))
