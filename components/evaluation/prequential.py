"""Prequential (next-item) evaluation: every interaction of a period is a target, ranked from what
its user did strictly before it.

Leave-one-out gives one target per user, which over a short period is few (ml-latest-small: about
50 a year), so that one hit moves NDCG@10 by 0.01. Here every interaction of `data.test` (or a
seeded sample of them) is a target. The evaluator ranks one history per user, so each target
becomes a user of its own whose history is its real user's interactions with an earlier timestamp;
the evaluator then does what it always does (full ranking over the catalog, the history's items
removed). Interactions in the same second as the target stay out of its history: their order is
unknown.

Targets of one user are not independent (same tastes, nearly the same history), so standard
errors come from a bootstrap over users, not over targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.dataset import PARTS, SplitData
from components.evaluation.evaluator import evaluate_ranking
from components.evaluation.protocol import Recommender

BOOTSTRAP_REPS = 1000


@dataclass
class Prequential:
    """Targets as users of their own: row t of `data.users` and of `data.test` is target t."""

    data: SplitData
    user_of: np.ndarray  # (targets,) each target's real user_idx in the source split


@dataclass
class PrequentialScore:
    """One model's NDCG@k over a `Prequential` split."""

    model: str
    ndcg: float
    se: float  # bootstrap over users
    targets: int
    users: int
    per_target: np.ndarray  # (targets,) NDCG@k in target order, for paired comparisons


def prequential_split(data: SplitData, limit: int | None = None, seed: int = 0) -> Prequential:
    """`data.test` (a seeded sample of at most `limit` rows) as targets, each with every interaction
    of `data` (train, valid or test) that its user had at an earlier timestamp as history.
    """
    every = pd.concat([getattr(data, p) for p in PARTS], ignore_index=True)
    every = every.sort_values(["user_idx", "timestamp"], kind="stable").reset_index(drop=True)
    targets = data.test
    if limit is not None and len(targets) > limit:
        targets = targets.iloc[np.sort(np.random.default_rng(seed).choice(len(targets), limit, replace=False))]
    targets = targets.reset_index(drop=True)
    t_users = targets["user_idx"].to_numpy(np.int64)

    # Rows sorted by (user, time) get one increasing key, so "the user's rows before time t" is a
    # range found by two binary searches; timestamps become ranks to keep the key small.
    stamps, ranks = np.unique(every["timestamp"].to_numpy(np.int64), return_inverse=True)
    width = len(stamps) + 1
    key = every["user_idx"].to_numpy(np.int64) * width + ranks
    first = np.searchsorted(key, t_users * width)
    stop = np.searchsorted(key, t_users * width + np.searchsorted(stamps, targets["timestamp"].to_numpy(np.int64)))
    lengths = stop - first
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(first - starts, lengths) + np.arange(int(lengths.sum()))

    ids = data.users["user_id"].astype(str).to_numpy()[t_users] + "@" + np.arange(len(targets)).astype(str)
    pseudo = np.arange(len(targets), dtype=np.int64)
    history = every.iloc[rows].assign(user_id=np.repeat(ids, lengths), user_idx=np.repeat(pseudo, lengths))
    users = data.users.iloc[t_users].assign(user_id=ids).reset_index(drop=True)
    split = SplitData(data.items, users, history.reset_index(drop=True), data.valid.iloc[:0].copy(),
                      targets.assign(user_id=ids, user_idx=pseudo))
    return Prequential(split, t_users)


def bootstrap_se(values: np.ndarray, groups: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> float:
    """Standard error of the mean of `values` when whole groups (users) are drawn with replacement."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float("nan")
    _, group = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(group, weights=values), np.bincount(group)
    n = len(counts)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=reps)  # (reps, groups)
    return float(((draws @ sums) / (draws @ counts)).std(ddof=1))


def score(model: Recommender, split: Prequential, k: int = 10, seed: int = 0) -> PrequentialScore:
    """NDCG@k of an already fitted `model` on every target of `split`, with its bootstrap error."""
    result = evaluate_ranking(model, split.data, "test", ks=(k,), progress=False)
    per_target = np.zeros(len(split.user_of))
    per_target[result.per_target["user_idx"].to_numpy()] = result.per_target[f"ndcg@{k}"].to_numpy()
    return PrequentialScore(model.name, float(per_target.mean()) if len(per_target) else 0.0,
                            bootstrap_se(per_target, split.user_of, seed=seed), len(per_target),
                            len(np.unique(split.user_of)), per_target)
