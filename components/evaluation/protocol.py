"""The one interface every recommender implements, baselines and the project's own model alike."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from components.data.dataset import SplitData


@runtime_checkable
class Recommender(Protocol):
    """Learns from `data.train` in `fit`; scores the whole catalog for a batch of users in `score`."""

    name: str

    def fit(self, data: SplitData) -> "Recommender":
        """Learn from the training interactions; returns self."""
        ...

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray | torch.Tensor:
        """(len(users), n_items) scores, higher is better, using each user's history for `stage`.

        `stage` is "valid" (history = train) or "test" (history = train + valid). The evaluator
        removes already-seen items itself, so a model need not mask them; it masks them in place,
        so return a fresh array, not a view of the model's own state.
        """
        ...
