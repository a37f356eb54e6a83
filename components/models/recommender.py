"""recloop behind the evaluator's `Recommender` protocol: a trained model from disk, or one trained in `fit`.

`load_recommender` serves the evaluate stage (it reads models/finetuned). `RecloopRecommender`
trains in `fit` (pretrain, then fine-tune) for benchmarks and ablations; `VARIANTS` names the
ablations, each only a change of params: ID-only, text-only, no pretraining, single-task.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from components.config import FinetuneConfig, ModelConfig, PretrainConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel, load_trained
from components.models.scoring import RecloopScorer

FINETUNED_DIR = "finetuned"


def load_recommender(models_dir: Path | None, name: str = "recloop") -> RecloopScorer:
    """The fine-tuned model under `models_dir` (paths.models) as a Recommender; `fit` checks the catalog."""
    if models_dir is None:
        raise RecloopError("the recloop model needs paths.models: run `recloop finetune` first")
    return RecloopScorer(load_trained(Path(models_dir) / FINETUNED_DIR), name=name)


class RecloopRecommender:
    """Trains recloop on `data.train` in `fit`: pretraining (unless `pretrain` is None), then fine-tuning."""

    def __init__(self, model: ModelConfig, pretrain: PretrainConfig | None, finetune: FinetuneConfig,
                 item_text: np.ndarray | None = None, seed: int = 42, name: str = "recloop",
                 curve_stage: str | None = None):
        self.model = model
        self.pretrain = pretrain
        self.finetune = finetune
        self.item_text = item_text
        self.seed = seed
        self.name = name
        self.curve_stage = curve_stage

    def fit(self, data: SplitData) -> RecloopRecommender:
        from components.training.finetune import finetune_model
        from components.training.pretrain import pretrain_model

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
                                                     knobs=self.model, curve_stage=self.curve_stage)
        self.scorer_ = RecloopScorer(self.trained_, self.name).fit(data)
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> torch.Tensor:
        return self.scorer_.score(data, users, stage)


def variant(name: str, model: ModelConfig, pretrain: PretrainConfig, finetune: FinetuneConfig,
            item_text: np.ndarray | None, seed: int = 42, curve_stage: str | None = None) -> RecloopRecommender:
    """An ablation by name: recloop, recloop-id-only, recloop-text-only, recloop-no-pretrain, recloop-single-task."""
    if name not in VARIANTS:
        raise RecloopError(f"unknown recloop variant {name!r}; known: {', '.join(VARIANTS)}")
    model_changes, pretrain_on, finetune_changes = VARIANTS[name]
    model = model.model_copy(update=model_changes)
    finetune = finetune.model_copy(update={**finetune_changes, "init": "pretrained" if pretrain_on else "scratch"})
    return RecloopRecommender(model, pretrain if pretrain_on else None, finetune,
                              item_text if model.use_text else None, seed, name, curve_stage)


# name -> (model params changed, pretrain or not, finetune params changed)
VARIANTS: dict[str, tuple[dict, bool, dict]] = {
    "recloop": ({}, True, {}),
    "recloop-id-only": ({"use_text": False}, True, {"contrastive_weight": 0.0}),
    "recloop-text-only": ({"use_id": False}, True, {}),
    "recloop-no-pretrain": ({}, False, {}),
    "recloop-single-task": ({}, True, {"like_weight": 0.0, "rating_weight": 0.0}),
}
