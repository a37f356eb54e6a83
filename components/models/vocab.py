"""How raw context values become embedding indices: fitted once on training data, saved beside the weights.

Index 0 always means "padding or unknown", so a value never seen in training (a new event type, a
new occupation, an attribute seen once) maps to a harmless shared row instead of an error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.dataset import SplitData
from components.data.schema import ITEM_COLUMNS

# Item columns that are not attributes: the text is encoded separately, `cold` is bookkeeping.
NOT_ATTRIBUTES = {*ITEM_COLUMNS, "cold"}
NOT_PROFILE = {"user_id"}
# Events whose value is an explicit rating (the rating head's label).
RATING_EVENTS = ("rate", "rating", "review")


@dataclass
class Vocab:
    """Lookup tables for every categorical input; list position i has embedding index i + 1."""

    events: list[str]
    domains: list[str]
    # Right-open bucket edges of interaction values (ratings, counts), from training quantiles.
    value_edges: list[float]
    # Item attribute tokens: "genre:Comedy" for categories, "brand:Sony" for other columns.
    attributes: list[str]
    # User profile column -> its categorical values; numeric columns are bucketed by edges instead.
    profile_values: dict[str, list[str]] = field(default_factory=dict)
    profile_edges: dict[str, list[float]] = field(default_factory=dict)
    # Training mean and spread of explicit ratings (the rating head predicts in standard units).
    rating_mean: float = 0.0
    rating_std: float = 1.0

    @property
    def profile_columns(self) -> list[str]:
        return sorted({*self.profile_values, *self.profile_edges})

    def profile_sizes(self) -> list[int]:
        """Embedding rows per profile column, in `profile_columns` order (0 = unknown)."""
        return [len(self.profile_values[c]) + 1 if c in self.profile_values else len(self.profile_edges[c]) + 2
                for c in self.profile_columns]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(**json.loads(Path(path).read_text()))


def codes(values: pd.Series | np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Index of each value in `vocabulary` plus one; 0 for values outside it."""
    return pd.Index(vocabulary).get_indexer(pd.Series(values).astype(str)).astype(np.int64) + 1


def buckets(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """1 + number of edges at or below each value, so 0 stays free for padding and missing values."""
    values = np.asarray(values, np.float64)
    out = np.searchsorted(np.asarray(edges, np.float64), values, side="right") + 1
    return np.where(np.isnan(values), 0, out).astype(np.int64)


def quantile_edges(values: np.ndarray, n_buckets: int) -> list[float]:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if not len(values) or n_buckets < 2:
        return []
    inner = np.quantile(values, np.linspace(0, 1, n_buckets + 1)[1:-1])
    return [float(e) for e in np.unique(inner) if e > values.min()]


def frequent(values: pd.Series, min_count: int) -> list[str]:
    counts = values.astype(str).value_counts()
    return sorted(counts.index[counts >= min_count])


def item_attribute_tokens(items: pd.DataFrame) -> pd.DataFrame:
    """Long table (row, token): each item's categories and other attribute columns, one token per row."""
    frames = []
    if "categories" in items:
        cats = items["categories"].map(lambda c: list(c) if c is not None and len(c) else [])
        long = cats.explode().dropna()
        frames.append(pd.DataFrame({"row": long.index.to_numpy(), "token": "category:" + long.astype(str)}))
    for column in [c for c in items.columns if c not in NOT_ATTRIBUTES]:
        values = items[column]
        if values.map(lambda v: isinstance(v, (list, np.ndarray))).any():
            continue  # only the `categories` list is exploded; other list columns are not attributes
        present = values.notna() & (values.astype(str) != "")
        frames.append(pd.DataFrame({"row": np.flatnonzero(present.to_numpy()),
                                    "token": f"{column}:" + values[present].astype(str).to_numpy()}))
    if not frames:
        return pd.DataFrame({"row": np.zeros(0, np.int64), "token": pd.Series(dtype=str)})
    return pd.concat(frames, ignore_index=True)


def fit_vocab(data: SplitData, value_buckets: int, min_attribute_count: int) -> Vocab:
    """Learn every lookup table from the training interactions, the catalog and the user table."""
    train = data.train
    events = sorted(train["event"].astype(str).unique()) if "event" in train else []
    domains = sorted({*train.get("domain", pd.Series(dtype=str)).astype(str),
                      *data.items.get("domain", pd.Series(dtype=str)).dropna().astype(str)})
    values = train["value"].to_numpy(np.float64) if "value" in train else np.zeros(0)
    rated = train["event"].astype(str).isin(RATING_EVENTS).to_numpy() if "event" in train else np.zeros(0, bool)
    ratings = values[rated]
    tokens = item_attribute_tokens(data.items)["token"]

    profile_values, profile_edges = {}, {}
    for column in [c for c in data.users.columns if c not in NOT_PROFILE]:
        col = data.users[column]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            profile_edges[column] = quantile_edges(col.to_numpy(np.float64), value_buckets)
        else:
            profile_values[column] = frequent(col.dropna(), min_attribute_count)
    return Vocab(events=events, domains=domains, value_edges=quantile_edges(values, value_buckets),
                 attributes=frequent(tokens, min_attribute_count), profile_values=profile_values,
                 profile_edges=profile_edges,
                 rating_mean=float(ratings.mean()) if len(ratings) else 0.0,
                 rating_std=float(ratings.std()) if len(ratings) > 1 and ratings.std() > 0 else 1.0)
