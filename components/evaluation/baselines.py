"""Reference recommenders behind the same `Recommender` interface and evaluator as the project's model.

Each learns from `data.train` only. At scoring time a user's history for the stage (train for
valid, train + valid for test) is what the model conditions on, so the test ranking knows the
validation interaction, as a sequential model's input would.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.content_prior import content_scores, recent_items, unit_rows

STAGES = ("valid", "test")


def stage_histories(data: SplitData) -> dict[str, sp.csr_matrix]:
    """(users, items) 0/1 history matrices for scoring each stage."""
    return {stage: data.seen_matrix(data.history(stage)) for stage in STAGES}


class MostPopular:
    """Everyone gets the items with the most training interactions."""

    name = "popular"

    def fit(self, data: SplitData) -> "MostPopular":
        self.popularity_ = data.item_popularity().astype(np.float32)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        return np.tile(self.popularity_, (len(users), 1))


class ItemKNN:
    """Item-based collaborative filtering: cosine similarity on the binary train matrix, top-k neighbours.

    score(u, j) = sum over history items i of sim(i, j), where only each item's `neighbours`
    most similar items keep a weight.
    """

    name = "itemknn"

    def __init__(self, neighbours: int = 100, block_cells: int = 1 << 24):
        self.neighbours = neighbours
        # Items per similarity block are chosen so a dense block holds about this many cells.
        self.block_cells = block_cells

    def fit(self, data: SplitData) -> "ItemKNN":
        x = data.seen_matrix(data.train).tocsc()  # (users, items)
        xt = x.T.tocsr()  # (items, users)
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        n = data.n_items
        k = min(self.neighbours, max(n - 1, 1))
        block = max(1, self.block_cells // max(n, 1))
        rows, cols, vals = [], [], []
        for start in range(0, n, block):
            stop = min(start + block, n)
            sim = (xt[start:stop] @ x).toarray().astype(np.float32)  # (block, items) co-occurrence counts
            sim *= inv[start:stop, None] * inv[None, :]
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # an item is not its own neighbour
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (stop - start, 1))
            weight = np.take_along_axis(sim, top, axis=1)
            keep = weight > 0
            rows.append(np.repeat(np.arange(start, stop), k).reshape(-1, k)[keep])
            cols.append(top[keep])
            vals.append(weight[keep])
        self.similarity_ = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                         shape=(n, n))
        self.histories_ = stage_histories(data)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        return (self.histories_[stage][users] @ self.similarity_).toarray()


class ImplicitALS:
    """Weighted matrix factorisation for implicit feedback (Hu, Koren & Volinsky 2008), `implicit` 0.7 on CPU.

    The item factors are fitted on train. For scoring, each user's factors are re-solved exactly
    (`recalculate_user`, one least-squares step against the fixed item factors) from the stage's
    history, so a test ranking includes the validation interaction without refitting items.
    """

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.01, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 42):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed

    def fit(self, data: SplitData) -> "ImplicitALS":
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit runs its own threads; a second BLAS thread pool underneath only slows it down.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                            alpha=self.alpha, iterations=self.iterations,
                                            random_state=self.seed)
            model.fit(data.seen_matrix(data.train), show_progress=False)
        self.model_ = model
        self.histories_ = stage_histories(data)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        with threadpool_limits(1, "blas"):
            user_factors = self.model_.recalculate_user(users, self.histories_[stage][users])
        return user_factors @ self.model_.item_factors.T


class ImplicitBPR:
    """Bayesian personalised ranking (Rendle et al. 2009), `implicit` 0.7 on CPU, one thread for repeatability.

    BPR has no fold-in step, so user factors come from train for both stages: the validation
    interaction is filtered from the test ranking but does not move the user's vector.
    """

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 42):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed

    def fit(self, data: SplitData) -> "ImplicitBPR":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                                regularization=self.regularization, iterations=self.iterations,
                                                num_threads=1, random_state=self.seed)
            model.fit(data.seen_matrix(data.train), show_progress=False)
        self.model_ = model
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        # The last item-factor column is a bias and the matching user column is 1: a plain dot product.
        return self.model_.user_factors[users] @ self.model_.item_factors.T


class ContentKNN:
    """Content-only: cosine between each item's text vector and the mean of the user's last n history items
    (the content prior of `components/models/content_prior.py`).

    Uses no interactions beyond the user's own history, so cold items rank by their text alone.
    Items without text (zero vectors) score 0.
    """

    name = "content"

    def __init__(self, item_embeddings: np.ndarray, history_items: int = 10):
        self.item_embeddings = item_embeddings
        self.history_items = history_items

    def fit(self, data: SplitData) -> "ContentKNN":
        e = np.asarray(self.item_embeddings, np.float32)
        if e.ndim != 2 or len(e) != data.n_items:
            raise RecloopError(f"item embeddings have shape {e.shape}, expected ({data.n_items}, d): "
                               "re-run `recloop featurize` after `recloop split`")
        self.unit_ = unit_rows(e)
        self.recent_ = {stage: recent_items(data.history(stage), data.n_users, data.n_items, self.history_items)
                        for stage in STAGES}  # history sorted by user, then time
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        return content_scores(self.unit_, self.recent_[stage][users])
