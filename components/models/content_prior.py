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


def unit_profiles(profiles: np.ndarray) -> np.ndarray:
    """(B, D) profiles over their length; a user none of whose last items has text keeps a zero profile."""
    profiles = np.asarray(profiles, np.float32)
    norms = np.linalg.norm(profiles, axis=1, keepdims=True)
    return np.divide(profiles, norms, out=np.zeros_like(profiles), where=norms > 0)


def content_scores(unit: np.ndarray, recent: sp.csr_matrix) -> np.ndarray:
    """(B, N) cosine of each item's unit text vector (`unit`, N x D) and each user's profile (`recent`'s rows)."""
    return unit_profiles(recent @ unit) @ unit.T  # the sum of the last items points where their mean does


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
        """(N, D) unit rows, a view of `unit_t`."""
        return self.unit_t.T

    @cached_property
    def unit_t(self) -> np.ndarray:
        """(D, N) the unit rows' transpose, contiguous: a (B, D) @ (D, N) product reads it a third faster."""
        return np.ascontiguousarray(unit_rows(self.text).T)

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """The unit rows' mean (D,) and covariance (D, D), in float64. A profile p scores the catalog with mean
        p . mean and variance p' cov p, so the blend standardises the prior's scores without a pass over them."""
        unit = self.unit.astype(np.float64)
        mean = unit.mean(0)
        return mean, unit.T @ unit / max(len(unit), 1) - np.outer(mean, mean)

    def profiles(self, recent: sp.csr_matrix) -> np.ndarray:
        """(B, D) unit profiles of the users whose last items `recent` counts (the evaluator's users)."""
        return unit_profiles(recent @ self.unit)

    def history_profiles(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) unit profiles after item-row histories in time order (a request's users): the same as
        `profiles` of their counts, without building them."""
        rows = [self.unit[np.asarray(h, np.int64)[-self.history_items:]].sum(0) for h in histories]
        return unit_profiles(np.stack(rows) if rows else np.zeros((0, self.unit.shape[1]), np.float32))

    def blend(self, model_scores: np.ndarray | torch.Tensor, profiles: np.ndarray) -> torch.Tensor:
        """The blended (B, N) scores of the users whose model scores and unit profiles are given: `blend`'s, with
        the prior's side standardised from `moments`, in NumPy (a served request's arrays are small: torch's
        per-call cost was most of the blend's time)."""
        if self.weight == 0:
            return blend(model_scores, None, 0.0)
        mean, cov = self.moments
        p = profiles.astype(np.float64)
        sd = np.sqrt(np.maximum(((p @ cov) * p).sum(1, keepdims=True), 0.0)).clip(min=1e-8)
        out = np.asarray(profiles, np.float32) @ self.unit_t  # (B, N) the prior's cosines
        out *= (self.weight / sd).astype(np.float32)
        out -= (self.weight * (p @ mean)[:, None] / sd).astype(np.float32)
        if self.weight < 1:
            model = (model_scores.detach().cpu().numpy() if isinstance(model_scores, torch.Tensor)
                     else np.asarray(model_scores, np.float32))
            if np.isfinite(model).all():
                out += (model - model.mean(1, keepdims=True)) * (
                    (1 - self.weight) / np.maximum(model.std(1, keepdims=True), 1e-8))
            else:
                out += (1 - self.weight) * standardized(model).numpy()
        return torch.from_numpy(out)

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
