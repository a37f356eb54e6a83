"""Text-embedding drift: the interacted items' language-model vectors, reduced to a few principal components.

Evidently 0.7.23 has an `EmbeddingsDrift` metric, but every run of it fits a t-SNE picture of the
samples (measured here: 4 s for 500 vectors on one core, 40 s for 2,000 + 2,000), too slow for a
monitor that runs on every window. We use the method of its `RatioDriftMethod` instead, in the same
report: project each interaction's item vector on the reference items' top principal components
and test every component for drift like any numerical column; the text signal is the share of
components that drifted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import RecloopError


@dataclass
class ItemVectors:
    """Item text vectors: row i of `matrix` belongs to `ids[i]`; all-zero rows mean "no text"."""

    ids: pd.Index
    matrix: np.ndarray

    @classmethod
    def load(cls, vectors: Path, items: Path) -> ItemVectors:
        """The featurize stage's `item_text.npy` and the items table it is aligned with."""
        for path in (vectors, items):
            if not Path(path).exists():
                raise RecloopError(f"{path} is missing: run `recloop featurize` (or leave out the item vectors)")
        matrix = np.load(vectors)
        ids = pd.Index(pd.read_parquet(items, columns=["item_id"])["item_id"].astype(str))
        if len(ids) != len(matrix):
            raise RecloopError(f"{vectors} has {len(matrix)} rows but {items} lists {len(ids)} items: "
                               "run `recloop featurize` again after `recloop split`")
        return cls(ids, matrix)


def text_columns(n_components: int) -> list[str]:
    return [f"text_pc{i + 1}" for i in range(n_components)]


def _principal_axes(vectors: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and top axes (k, d), from the (d, d) covariance so any number of items fits in memory."""
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    top = axes[:, ::-1][:, :n_components].T
    # An eigenvector's sign is arbitrary; fix it so that reruns give the same columns.
    top *= np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]
    return mean, top


def text_components(vectors: ItemVectors, reference: pd.DataFrame, current: pd.DataFrame,
                    n_components: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Per-interaction principal components of the item's text vector (NaN where it has none).

    The axes come from the distinct reference items that have text. Returns None when fewer items
    than components have vectors: there is nothing to compare.
    """
    has_text = (vectors.matrix != 0).any(axis=1)
    ref_rows = vectors.ids.get_indexer(reference["item_id"].unique())
    ref_rows = ref_rows[ref_rows >= 0]
    ref_rows = ref_rows[has_text[ref_rows]]
    if len(ref_rows) <= n_components:
        return None
    mean, axes = _principal_axes(vectors.matrix[ref_rows].astype(np.float64), n_components)
    rows = [vectors.ids.get_indexer(frame["item_id"]) for frame in (reference, current)]
    # Project only the items these windows touch, never the whole catalog.
    needed = np.unique(np.concatenate(rows))
    needed = needed[needed >= 0]
    projected = (vectors.matrix[needed] - mean) @ axes.T  # (needed items, k)
    projected[~has_text[needed]] = np.nan
    columns = text_columns(n_components)

    def per_row(row: np.ndarray) -> pd.DataFrame:
        values = np.full((len(row), n_components), np.nan)
        found = row >= 0
        values[found] = projected[np.searchsorted(needed, row[found])]
        return pd.DataFrame(values, columns=columns)

    return per_row(rows[0]), per_row(rows[1])
