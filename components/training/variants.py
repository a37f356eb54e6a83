"""recloop trained inside `fit`, behind the evaluator's `Recommender` protocol, and its named ablations.

`RecloopVariant` pretrains (unless told not to), then fine-tunes on `data.train` in `fit`, and scores
like any baseline: benchmarks and ablations run it through the same evaluator. `VARIANTS` names the
ablations, each only a change of params: ID-only, text-only, no pretraining, single-task.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel

from components.config import FinetuneConfig, LabelsConfig, ModelConfig, PretrainConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel
from components.models.scoring import RecloopScorer
from components.training.finetune import finetune_model
from components.training.pretrain import pretrain_model


class RecloopVariant:
    """Trains recloop on `data.train` in `fit`: pretraining (unless `pretrain` is None), then fine-tuning."""

    def __init__(self, model: ModelConfig, pretrain: PretrainConfig | None, finetune: FinetuneConfig,
                 labels: LabelsConfig, item_text: np.ndarray | None = None, seed: int = 42, name: str = "recloop",
                 curve_stage: str | None = None):
        self.model = model
        self.pretrain = pretrain
        self.finetune = finetune
        self.labels = labels
        self.item_text = item_text
        self.seed = seed
        self.name = name
        self.curve_stage = curve_stage

    def fit(self, data: SplitData) -> RecloopVariant:
        text = self.item_text
        if text is None:
            if self.model.use_text:
                raise RecloopError(f"{self.name} reads item text: pass item_text (the featurize output) "
                                   "or set model.use_text=false")
            text = np.zeros((data.n_items, 1), np.float32)  # nothing to read; keeps the tower's shapes
        pretrained: TrainedModel | None = None
        self.pretrain_result_ = None
        if self.pretrain is not None:
            pretrained, self.pretrain_result_ = pretrain_model(data, text, self.model, self.pretrain, self.seed,
                                                               curve_stage=self.curve_stage)
        self.trained_, self.result_ = finetune_model(data, text, self.finetune, self.seed, pretrained=pretrained,
                                                     knobs=self.model, labels=self.labels,
                                                     curve_stage=self.curve_stage)
        self.scorer_ = RecloopScorer(self.trained_, self.name).fit(data)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> torch.Tensor:
        return self.scorer_.score(data, users, stage)


def _changed(section: BaseModel, changes: dict) -> BaseModel:
    """`section` with `changes` applied; a nested dict changes only the keys it names (finetune.weights.like)."""
    values = section.model_dump()
    for key, value in changes.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return type(section).model_validate(values)


def variant(name: str, model: ModelConfig, pretrain: PretrainConfig, finetune: FinetuneConfig,
            labels: LabelsConfig, item_text: np.ndarray | None, seed: int = 42,
            curve_stage: str | None = None) -> RecloopVariant:
    """An ablation by name: recloop, recloop-id-only, recloop-text-only, recloop-no-pretrain, recloop-single-task."""
    if name not in VARIANTS:
        raise RecloopError(f"unknown recloop variant {name!r}; known: {', '.join(VARIANTS)}")
    model_changes, pretrain_on, finetune_changes = VARIANTS[name]
    model = _changed(model, model_changes)
    finetune = _changed(finetune, {**finetune_changes, "init": "pretrained" if pretrain_on else "scratch"})
    return RecloopVariant(model, pretrain if pretrain_on else None, finetune, labels,
                          item_text if model.use_text else None, seed, name, curve_stage)


# name -> (model params changed, pretrain or not, finetune params changed), in params.yaml's layout.
VARIANTS: dict[str, tuple[dict, bool, dict]] = {
    "recloop": ({}, True, {}),
    "recloop-id-only": ({"use_text": False}, True, {"weights": {"contrastive": 0.0}}),
    "recloop-text-only": ({"use_id": False}, True, {}),
    "recloop-no-pretrain": ({}, False, {}),
    "recloop-single-task": ({}, True, {"weights": {"like": 0.0, "rating": 0.0}}),
}
