"""The content prior and its blend with a model's scores: the zero-shot recipe's scoring, in one place.

The content prior scores every item by the cosine between its text vector and the user's profile,
the sum (the direction of the mean) of the unit text vectors of the user's last `history_items`
items. The blend is (1 - weight) x the model's scores + weight x the prior's, each standardised per
user over the whole catalog (`standardized`): the two scales differ, and a new catalog's model
scores have no scale of their own to trust.

The benchmark (evaluation/baselines.ContentKNN, training/zero_shot.BlendScorer), the evaluator's
scorer of a saved model (models/scoring.RecloopScorer) and the service (serving/recommender.py)
all score with these functions, so a served answer and a measured one agree. A model that carries
a prior saves it beside its weights (`save_prior`: the vectors the prior reads, already normalised,
and how: `components/features/text_norm.py`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from components.errors import RecloopError

# The prior's candidate weights, from the model alone (0) to the prior alone (1).
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PRIOR_TEXT_FILE = "content_prior.npy"
PRIOR_FILE = "content_prior.json"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row over its length (zero rows, items without text, stay zero), float32."""
    e = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)


def recent_items(history: pd.DataFrame, n_users: int, n_items: int, history_items: int) -> sp.csr_matrix:
    """(n_users, n_items) counts of each user's last `history_items` interactions of `history`
    (a frame of user_idx, item_idx sorted by user, then time)."""
    from_end = history.groupby("user_idx", sort=False).cumcount(ascending=False).to_numpy()
    last = history[from_end < history_items]
    return sp.csr_matrix((np.ones(len(last), np.float32), (last["user_idx"].to_numpy(), last["item_idx"].to_numpy())),
                         shape=(n_users, n_items))


def recent_rows(histories: Sequence[np.ndarray], n_items: int, history_items: int) -> sp.csr_matrix:
    """The same for item-row histories in time order, one per row of the result (a request's users)."""
    last = [np.asarray(h, np.int64)[-history_items:] for h in histories]
    lengths = np.fromiter((len(h) for h in last), np.int64, len(last))
    cols = np.concatenate(last) if last else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(cols), np.float32), (np.repeat(np.arange(len(last)), lengths), cols)),
                         shape=(len(last), n_items))


def content_scores(unit: np.ndarray, recent: sp.csr_matrix) -> np.ndarray:
    """(B, N) cosine of each item's unit text vector (`unit`, N x D) and each user's profile (`recent`'s rows)."""
    profile = recent @ unit  # (B, D); the sum points where the mean does
    norms = np.linalg.norm(profile, axis=1, keepdims=True)
    profile = np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)
    return profile @ unit.T


def standardized(scores: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Each row minus its mean over its finite entries, over their standard deviation (-inf stays -inf)."""
    s = (scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))).float()
    finite = torch.isfinite(s)
    values = torch.where(finite, s, torch.zeros_like(s))
    count = finite.sum(1, keepdim=True).clamp(min=1)
    mean = values.sum(1, keepdim=True) / count
    var = (torch.where(finite, s - mean, torch.zeros_like(s)) ** 2).sum(1, keepdim=True) / count
    return torch.where(finite, (s - mean) / var.sqrt().clamp(min=1e-8), s)


def blend(model: np.ndarray | torch.Tensor | None, content: np.ndarray | torch.Tensor | None,
          weight: float) -> torch.Tensor:
    """(1 - weight) x standardized(model) + weight x standardized(content); a side whose weight is 0 may be None
    (not computed)."""
    if not 0.0 <= weight <= 1.0:
        raise RecloopError(f"the content prior's weight {weight} is not within [0, 1]")
    model_part = standardized(model) if weight < 1 else 0.0
    content_part = standardized(content) if weight > 0 else 0.0
    return (1 - weight) * model_part + weight * content_part


@dataclass
class ContentPrior:
    """What a model's scores are blended with: the item vectors the prior reads and the blend's weight."""

    text: np.ndarray  # (N, D) float32, row i = catalog item i, normalised as `normalisation` says
    weight: float
    history_items: int
    normalisation: str = "none"  # features/text_norm.py KINDS: how `text` was made from the encoder's vectors

    @cached_property
    def unit(self) -> np.ndarray:
        return unit_rows(self.text)

    def scores(self, recent: sp.csr_matrix) -> np.ndarray:
        """(B, N) content scores of the users whose last items `recent` counts."""
        return content_scores(self.unit, recent)

    def blend(self, model_scores: np.ndarray | torch.Tensor, recent: sp.csr_matrix) -> torch.Tensor:
        """The blended (B, N) scores of the users whose model scores and last items are given."""
        return blend(model_scores, self.scores(recent) if self.weight > 0 else None, self.weight)

    def describe(self) -> dict:
        return {"weight": self.weight, "history_items": self.history_items, "normalisation": self.normalisation}


def save_prior(prior: ContentPrior, model_dir: Path) -> None:
    np.save(Path(model_dir) / PRIOR_TEXT_FILE, np.asarray(prior.text, np.float32))
    (Path(model_dir) / PRIOR_FILE).write_text(json.dumps(prior.describe(), indent=1) + "\n")


def load_prior(model_dir: Path) -> ContentPrior | None:
    """The prior saved in `model_dir`, or None when the model has none (saved without one, or validation kept
    the model alone)."""
    path = Path(model_dir) / PRIOR_FILE
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    return ContentPrior(np.load(Path(model_dir) / PRIOR_TEXT_FILE).astype(np.float32, copy=False),
                        float(meta["weight"]), int(meta["history_items"]), meta.get("normalisation", "none"))
