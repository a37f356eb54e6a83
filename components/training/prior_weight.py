"""A trained model blended with the content prior, its weight chosen on the model's own validation targets.

Zero-shot transfer chooses the weight on other catalogs (`training/zero_shot.py`), having no
interactions of its own; a model trained on its catalog has validation targets, and chooses there.
The blend is what the evaluator and the service then score (`models/content_prior.py`): the prior
lifts items whose text is like the user's last items, which the ID-bound model under-ranks on
sparse catalogs.
"""
from __future__ import annotations

import numpy as np

from components.config import LabelsConfig
from components.data.dataset import SplitData
from components.features.text_norm import normalise_text
from components.models.artifacts import TrainedModel
from components.models.content_prior import WEIGHTS, ContentPrior
from components.training.loop import LoopResult
from components.training.stage import validator

# The validation curve over the weights rises to one peak and falls; two falls in a row end the search.
FALLS = 2


def choose_own_prior(trained: TrainedModel, data: SplitData, text: np.ndarray, normalisation: str,
                     history_items: int, labels: LabelsConfig | None = None) -> dict:
    """Set `trained.prior` to the content prior with the best validation NDCG@10 over `WEIGHTS` (the model
    alone, weight 0, included: it is kept without a prior when nothing beats it); return what to record,
    the chosen prior and each tried weight's validation NDCG@10, and the validation metrics as served."""
    vectors = normalise_text(text, normalisation)
    tried: dict[float, dict[str, float]] = {}
    falls, previous = 0, -1.0
    for weight in WEIGHTS:
        trained.prior = ContentPrior(vectors, weight, history_items, normalisation) if weight > 0 else None
        tried[weight] = validator(trained, data, labels)(trained.model)
        score = tried[weight]["valid_ndcg@10"]
        falls, previous = (falls + 1 if score < previous else 0), score
        if falls == FALLS:
            break
    best = max(tried, key=lambda w: (round(tried[w]["valid_ndcg@10"], 6), -w))
    trained.prior = ContentPrior(vectors, best, history_items, normalisation) if best > 0 else None
    return {**tried[best], "content_prior": {
        "weight": best, "normalisation": normalisation, "history_items": history_items,
        "chosen_on": "the model's own validation targets",
        "valid_ndcg@10": {str(w): round(m["valid_ndcg@10"], 5) for w, m in tried.items()}}}


def add_own_prior(trained: TrainedModel, result: LoopResult, data: SplitData, text: np.ndarray, normalisation: str,
                  history_items: int, labels: LabelsConfig | None = None) -> None:
    """After training: `choose_own_prior`, recorded in `result.after` beside the model alone's validation
    metrics (`model_only_valid_*`), which the stage's metrics then report over the best epoch's."""
    alone = {f"model_only_{k}": v for k, v in result.best_metrics.items() if k.startswith("valid_")}
    result.after = alone | choose_own_prior(trained, data, text, normalisation, history_items, labels)
