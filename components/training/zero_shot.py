"""Zero-shot scoring of a catalog no model has trained on: the adopted foundation's score (dot or cosine),
and a blend of it with the content prior (text similarity to the user's recent items).

The blend's weight is chosen on the validation targets of other catalogs (the foundation's sources,
each under a domain token the foundation never saw, as the target has), never on the target: a
zero-shot catalog has no interactions to choose it with.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.baselines import ContentKNN
from components.evaluation.evaluator import evaluate_ranking
from components.features.text_norm import normalise_text
from components.models.content_prior import WEIGHTS, ContentPrior, blend
from components.models.foundation import Foundation, adopt
from components.models.scoring import RecloopScorer
from components.training.foundation import domains_of, tag_domain

HELD_OUT_DOMAIN = "held-out"  # a token no foundation learned: source catalogs scored as the target is


class BlendScorer:
    """(1 - weight) x the model's standardized score + weight x the content prior's, per user
    (`models/content_prior.blend`, as a served model with a prior is scored)."""

    def __init__(self, model: RecloopScorer, content: ContentKNN, weight: float, name: str = "zero-shot-blend"):
        if not 0.0 <= weight <= 1.0:
            raise RecloopError(f"the content prior's weight {weight} is not within [0, 1]")
        self.model, self.content, self.weight, self.name = model, content, weight, name

    def fit(self, data: SplitData) -> BlendScorer:
        self.model.fit(data)
        self.content.fit(data)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> torch.Tensor:
        return blend(self.model.score(data, users, stage) if self.weight < 1 else None,
                     self.content.score(data, users, stage) if self.weight > 0 else None, self.weight)


@dataclass
class BlendChoice:
    weight: float
    valid_ndcg: dict[float, float]  # weight -> mean validation NDCG@10 over the catalogs it was chosen on
    catalogs: int
    per_catalog: list[dict[float, float]]  # the same, catalog by catalog


def zero_shot_scorer(foundation: Foundation, data: SplitData, text: np.ndarray, *, cosine: bool = False,
                     name: str = "zero-shot") -> RecloopScorer:
    """The foundation adopted by `data`'s catalog with no ID rows, behind the evaluator's interface;
    `cosine` scores by the cosine of user and item vectors (`Recloop.unit`), as a served zero-shot model does."""
    return RecloopScorer(adopt(foundation, data, text, ids=False, cosine=cosine), name)


def choose_blend_weight(foundation: Foundation, catalogs: Sequence[tuple[SplitData, np.ndarray]], *,
                        history_items: int = 10, cosine: bool = False, weights: Sequence[float] = WEIGHTS,
                        content_texts: Sequence[np.ndarray] | None = None) -> BlendChoice:
    """The content prior's weight with the best mean validation NDCG@10 over `catalogs` scored zero-shot.

    Each catalog is retagged with a domain token the foundation never saw, as a new catalog is.
    `content_texts` (one per catalog) are the vectors the content prior reads when they differ from
    the model's (default: the same). Ties go to the smaller weight (the model's own score).
    """
    if not catalogs:
        raise RecloopError("choosing the zero-shot blend weight needs at least one catalog other than the target")
    per_catalog = []
    for i, (data, text) in enumerate(catalogs):
        data = tag_domain(data, HELD_OUT_DOMAIN)
        model = zero_shot_scorer(foundation, data, text, cosine=cosine)
        content = ContentKNN(text if content_texts is None else content_texts[i], history_items)
        per_catalog.append({w: evaluate_ranking(BlendScorer(model, content, w).fit(data), data, "valid", ks=(10,),
                                                progress=False).metrics["ndcg@10"] for w in weights})
    table = {w: sum(c[w] for c in per_catalog) / len(per_catalog) for w in weights}
    best = max(weights, key=lambda w: (round(table[w], 6), -w))
    return BlendChoice(best, table, len(catalogs), per_catalog)


def zero_shot_prior(foundation: Foundation, text: np.ndarray, catalogs: Sequence[tuple[SplitData, np.ndarray]], *,
                    normalisation: str, history_items: int, cosine: bool, weight: float | None = None
                    ) -> tuple[ContentPrior, dict]:
    """The content prior a zero-shot model of the catalog with item vectors `text` is served with; (it, what to
    record). The prior reads `text` normalised as `normalisation` says (from these vectors alone, no
    interactions); its weight is `weight`, or when None the one `choose_blend_weight` picks on `catalogs`
    (each normalised the same way from its own vectors), never on the target.
    """
    info: dict = {"normalisation": normalisation, "history_items": history_items}
    if weight is None:
        choice = choose_blend_weight(foundation, catalogs, history_items=history_items, cosine=cosine,
                                     content_texts=[normalise_text(t, normalisation) for _, t in catalogs])
        weight = choice.weight
        info |= {"chosen_on": [",".join(domains_of(d)) for d, _ in catalogs],
                 "valid_ndcg@10": {str(w): round(v, 5) for w, v in choice.valid_ndcg.items()}}
    else:
        info["chosen_on"] = "transfer.blend_weight"
    info["weight"] = weight
    return ContentPrior(normalise_text(text, normalisation), weight, history_items, normalisation), info
