"""Full-ranking, leave-one-out evaluation of any `Recommender`, chunked over users.

Protocol: every target of `data.targets(stage)` is ranked against the whole catalog (no sampled
negatives). Items in the user's history for that stage are removed from the candidates; a target
that is itself in the history (re-consumption data) is therefore unreachable and counts as a miss
(`targets_in_history` says how many). Ties are scored by their expected value under a random order
(see `metrics`). Scores exist for one chunk of users at a time, so memory is chunk x items.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from components.data.dataset import SplitData
from components.evaluation import metrics as M
from components.evaluation.protocol import Recommender

# Buckets of the target's training interaction count, for accuracy by popularity.
POPULARITY_EDGES = (0, 1, 5, 20, 100, 500)
POPULARITY_LABELS = ("0", "1-4", "5-19", "20-99", "100-499", "500+")


@dataclass
class RankingResult:
    """What one model scored on one stage: per-target values, top-K lists and aggregates."""

    model: str
    stage: str
    ks: tuple[int, ...]
    # One row per target: user_idx, item_idx, greater, ties, in_history, then hr@k, ndcg@k, rr, rr@k.
    per_target: pd.DataFrame
    # Each evaluated user's top max(ks) items (-1 where fewer candidates exist) and their scores.
    topk_users: np.ndarray
    topk_items: np.ndarray
    topk_scores: np.ndarray
    metrics: dict[str, float]
    # Slice name -> {"size": targets in the slice, metric: value}.
    slices: dict[str, dict[str, float]]
    # One row per popularity bucket of the target: bucket, targets, catalog items, then metrics.
    by_popularity: pd.DataFrame
    seconds: float = 0.0

    def topk_frame(self, data: SplitData) -> pd.DataFrame:
        """Long table user_id, rank (1-based), item_id, score, so others can recompute any metric."""
        k = self.topk_items.shape[1]
        valid = self.topk_items >= 0
        users = np.repeat(self.topk_users, k).reshape(-1, k)
        ranks = np.broadcast_to(np.arange(1, k + 1), self.topk_items.shape)
        return pd.DataFrame({
            "user_id": data.users["user_id"].to_numpy()[users[valid]],
            "rank": ranks[valid].astype(np.int32),
            "item_id": data.items["item_id"].to_numpy()[self.topk_items[valid]],
            "score": self.topk_scores[valid],
        })


def _accuracy_columns(ks: tuple[int, ...]) -> list[str]:
    return [f"{name}@{k}" for k in ks for name in ("hr", "ndcg")] + ["mrr"] + [f"mrr@{k}" for k in ks]


def _per_target_metrics(greater: np.ndarray, ties: np.ndarray, missed: np.ndarray,
                        ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    hit = ~missed
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hr@{k}"] = M.hit_rate(greater, ties, k) * hit
        out[f"ndcg@{k}"] = M.ndcg(greater, ties, k) * hit
    out["mrr"] = M.reciprocal_rank(greater, ties) * hit
    for k in ks:
        out[f"mrr@{k}"] = M.reciprocal_rank(greater, ties, k) * hit
    return out


def _scores_array(scores: np.ndarray | torch.Tensor, shape: tuple[int, int], name: str) -> np.ndarray:
    """The model's scores as a writable, contiguous float32 CPU array (GPU tensors are copied over)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float32).numpy()
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.shape != shape:
        raise ValueError(f"{name}.score returned shape {scores.shape}, expected {shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{name}.score returned NaN scores")
    if not scores.flags.writeable:
        scores = scores.copy()
    return scores


def _slice_means(per_target: pd.DataFrame, masks: dict[str, np.ndarray], columns: list[str]) -> dict:
    slices: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        part = per_target.loc[mask, columns]
        slices[name] = {"size": int(mask.sum()), **({c: float(v) for c, v in part.mean().items()}
                                                     if len(part) else {})}
    return slices


def evaluate_ranking(model: Recommender, data: SplitData, stage: str = "test", ks: tuple[int, ...] = (10, 20),
                     *, users: np.ndarray | None = None, chunk_size: int = 1024, head_share: float = 0.2,
                     cold_user_max_history: int = 5, item_embeddings: np.ndarray | None = None,
                     progress: bool = True) -> RankingResult:
    """Rank each target of `stage` against the full catalog and aggregate metrics, slices and buckets.

    `users` restricts the evaluation to those user indices (a sample). `item_embeddings`
    (items, d) enables intra-list diversity. `cold_user_max_history`: users with at most this many
    history interactions for the stage form the cold-user slice.
    """
    start = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    max_k = min(ks[-1], data.n_items)
    targets = data.targets(stage)
    if users is not None:
        targets = targets[targets["user_idx"].isin(np.asarray(users))]
    targets = targets.sort_values("user_idx", kind="stable")
    t_users = targets["user_idx"].to_numpy(np.int64)
    t_items = targets["item_idx"].to_numpy(np.int64)
    history = data.history(stage)
    seen = data.seen_matrix(history)
    in_history = np.asarray(seen[t_users, t_items]).ravel() > 0 if len(t_users) else np.zeros(0, bool)

    eval_users = np.unique(t_users)
    greater = np.zeros(len(t_users), np.int64)
    ties = np.zeros(len(t_users), np.int64)
    unreachable = np.zeros(len(t_users), bool)
    topk_items = np.full((len(eval_users), max_k), -1, np.int64)
    topk_scores = np.full((len(eval_users), max_k), -np.inf, np.float32)
    chunks = range(0, len(eval_users), chunk_size)
    for begin in tqdm(chunks, desc=f"{model.name} {stage}", unit="chunk", disable=not progress, leave=False):
        chunk = eval_users[begin:begin + chunk_size]
        scores = _scores_array(model.score(data, chunk, stage), (len(chunk), data.n_items), model.name)
        block = seen[chunk].tocoo()
        scores[block.row, block.col] = -np.inf

        # torch's topk is a partial selection; numpy counts comparisons several times faster than torch.
        values, indices = torch.topk(torch.from_numpy(scores), max_k, dim=1)
        topk_items[begin:begin + len(chunk)] = np.where(np.isfinite(values.numpy()), indices.numpy(), -1)
        topk_scores[begin:begin + len(chunk)] = values.numpy()

        lo, hi = np.searchsorted(t_users, [chunk[0], chunk[-1] + 1])
        rows = np.searchsorted(chunk, t_users[lo:hi])
        rows_scores = scores if len(rows) == len(chunk) else scores[rows]  # one target per user: no copy
        target = rows_scores[np.arange(len(rows)), t_items[lo:hi]][:, None]
        greater[lo:hi] = np.count_nonzero(rows_scores > target, axis=1)
        ties[lo:hi] = np.count_nonzero(rows_scores == target, axis=1) - 1
        # A target scored -inf by the model, or masked as seen, can never be recommended.
        unreachable[lo:hi] = ~np.isfinite(target[:, 0])

    missed = unreachable | in_history
    greater = np.where(missed, data.n_items, greater)
    ties = np.where(missed, 0, ties)
    per_target = pd.DataFrame({"user_idx": t_users, "item_idx": t_items, "greater": greater, "ties": ties,
                               "in_history": in_history, **_per_target_metrics(greater, ties, missed, ks)})
    columns = _accuracy_columns(ks)

    popularity = data.item_popularity()
    head = M.head_items(popularity, head_share)
    share = M.user_share(data.seen_matrix(data.train))
    summary: dict[str, float] = {c: float(per_target[c].mean()) if len(per_target) else 0.0 for c in columns}
    for k in ks:
        lists = topk_items[:, :k]
        summary[f"coverage@{k}"] = M.catalog_coverage(lists, data.n_items)
        summary[f"long_tail_share@{k}"] = M.long_tail_share(lists, head)
        summary[f"novelty@{k}"] = M.novelty(lists, share)
        summary[f"arp@{k}"] = M.average_popularity(lists, popularity)
        summary[f"arp_ratio@{k}"] = summary[f"arp@{k}"] / max(float(popularity.mean()), 1e-12)
        if item_embeddings is not None:
            summary[f"ild@{k}"] = M.intra_list_diversity(lists, item_embeddings)
    summary["targets"] = float(len(per_target))
    summary["targets_in_history"] = float(in_history.sum())

    history_len = np.bincount(history["user_idx"].to_numpy(), minlength=data.n_users)
    # Held out by the split (`cold`) or first seen after training: either way no training signal.
    cold_items = data.items["cold"].to_numpy(bool) | (popularity == 0)
    masks = {
        "all": np.ones(len(per_target), bool),
        "head_items": head[t_items],
        "tail_items": ~head[t_items],
        "cold_items": cold_items[t_items],
        "cold_users": history_len[t_users] <= cold_user_max_history,
    }
    if "domain" in targets:
        domains = targets["domain"].astype(str).to_numpy()
        for domain in np.unique(domains):
            masks[f"domain={domain}"] = domains == domain
    slices = _slice_means(per_target, masks, columns)

    bucket = np.digitize(popularity[t_items], POPULARITY_EDGES) - 1
    catalog_bucket = np.digitize(popularity, POPULARITY_EDGES) - 1
    by_pop = per_target[columns].groupby(bucket).mean().reindex(range(len(POPULARITY_LABELS)))
    by_pop.insert(0, "items", np.bincount(catalog_bucket, minlength=len(POPULARITY_LABELS)))
    by_pop.insert(0, "targets", np.bincount(bucket, minlength=len(POPULARITY_LABELS)))
    by_pop.insert(0, "bucket", POPULARITY_LABELS)
    by_pop = by_pop.reset_index(drop=True)

    return RankingResult(model=model.name, stage=stage, ks=ks, per_target=per_target, topk_users=eval_users,
                         topk_items=topk_items, topk_scores=topk_scores, metrics=summary, slices=slices,
                         by_popularity=by_pop, seconds=time.perf_counter() - start)
