"""Ranking, beyond-accuracy and point-wise metrics as plain numpy functions.

Ranking metrics take, per target, how many candidates scored strictly higher (`greater`) and how
many other candidates tied with it (`ties`). With ties, the metric is its exact expected value
when the tied items are ordered at random (McSherry & Najork, ECIR 2008): the target's 0-based
position is uniform on {greater, ..., greater + ties}. A model that scores everything alike
therefore gets the metric of a random ranking, neither the best (counting only ">") nor the worst
(counting ">="); without ties the numbers are the usual ones.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _discount_prefix(k: int) -> np.ndarray:
    """D[j] = sum of 1/log2(p + 2) over positions p < j, for j = 0..k."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])


def _harmonic_prefix(n: int) -> np.ndarray:
    """H[j] = sum of 1/(p + 1) over positions p < j, for j = 0..n."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])


def hit_rate(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """Per target: probability that the target lands in the top k (HR@k = Recall@k for one target)."""
    greater, ties = np.asarray(greater, np.int64), np.asarray(ties, np.int64)
    return np.clip(k - greater, 0, ties + 1) / (ties + 1.0)


def ndcg(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """Per target: NDCG@k with one relevant item (its ideal DCG is 1)."""
    greater, ties = np.asarray(greater, np.int64), np.asarray(ties, np.int64)
    d = _discount_prefix(k)
    return (d[np.minimum(greater + ties + 1, k)] - d[np.minimum(greater, k)]) / (ties + 1.0)


def reciprocal_rank(greater: np.ndarray, ties: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per target: 1 / rank (0 beyond k when k is given); MRR is its mean."""
    greater, ties = np.asarray(greater, np.int64), np.asarray(ties, np.int64)
    last = greater + ties + 1
    cap = int(last.max(initial=0)) if k is None else k
    h = _harmonic_prefix(cap)
    return (h[np.minimum(last, cap)] - h[np.minimum(greater, cap)]) / (ties + 1.0)


def head_items(popularity: np.ndarray, share: float = 0.2) -> np.ndarray:
    """(items,) bool: the most popular items that together make `share` of training interactions.

    Items are taken by decreasing popularity until their interactions reach the share; the item
    that crosses the line belongs to the head. Everything else is the long tail.
    """
    popularity = np.asarray(popularity, np.float64)
    order = np.argsort(-popularity, kind="stable")
    cumulative = np.cumsum(popularity[order])
    n_head = int(np.searchsorted(cumulative, share * cumulative[-1], side="left")) + 1 if len(order) else 0
    head = np.zeros(len(popularity), dtype=bool)
    head[order[:n_head]] = True
    head &= popularity > 0
    return head


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one list; -1 entries (no candidate) are ignored."""
    items = topk[topk >= 0]
    return float(np.unique(items).size / n_items) if n_items else 0.0


def long_tail_share(topk: np.ndarray, head: np.ndarray) -> float:
    """Share of recommended slots filled with items outside the head."""
    items = topk[topk >= 0]
    return float((~head[items]).mean()) if items.size else 0.0


def novelty(topk: np.ndarray, user_share: np.ndarray) -> float:
    """Mean self-information -log2(p) of recommended items, p = share of training users who had the item.

    Add-one smoothing, p = (users with item + 1) / (users + 1), keeps never-seen items finite.
    `user_share` is that smoothed p per item.
    """
    items = topk[topk >= 0]
    return float(-np.log2(user_share[items]).mean()) if items.size else 0.0


def average_popularity(topk: np.ndarray, popularity: np.ndarray) -> float:
    """ARP: mean training interaction count of recommended items."""
    items = topk[topk >= 0]
    return float(np.asarray(popularity, np.float64)[items].mean()) if items.size else 0.0


def intra_list_diversity(topk: np.ndarray, embeddings: np.ndarray, chunk: int = 4096) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) between the list's items.

    Uses |sum e|^2 = sum |e|^2 + 2 sum_{i<j} e_i.e_j on unit vectors, so a list costs O(k d), not O(k^2 d).
    Lists with fewer than two items, and items with a zero embedding (no text), are left out.
    """
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings, dtype=np.float32), where=norms > 0)
    has_vector = (norms[:, 0] > 0)
    total, lists = 0.0, 0
    for start in range(0, len(topk), chunk):
        block = topk[start:start + chunk]
        valid = (block >= 0) & has_vector[np.maximum(block, 0)]
        vectors = unit[np.maximum(block, 0)] * valid[..., None]  # (U, K, d)
        n = valid.sum(1)
        summed = vectors.sum(1)  # (U, d)
        pair_sum = ((summed * summed).sum(1) - n) / 2.0
        pairs = n * (n - 1) / 2.0
        ok = pairs > 0
        total += float((1.0 - pair_sum[ok] / pairs[ok]).sum())
        lists += int(ok.sum())
    return total / lists if lists else 0.0


def user_share(seen: sp.csr_matrix) -> np.ndarray:
    """Smoothed share of users who interacted with each item: (users with item + 1) / (users + 1)."""
    counts = np.asarray((seen > 0).sum(axis=0)).ravel()
    return (counts + 1.0) / (seen.shape[0] + 1.0)


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; tied scores count one half)."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = rankdata(np.asarray(y_score, np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities `p`; clipped to [eps, 1 - eps] so one sure miss is finite."""
    y = np.asarray(y_true, np.float64)
    p = np.clip(np.asarray(p, np.float64), eps, 1.0 - eps)
    return float(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).mean())


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    diff = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.sqrt((diff * diff).mean()))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)).mean())
