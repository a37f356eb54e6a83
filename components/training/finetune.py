"""The finetune stage: multi-task training (retrieval, like, rating) starting from the pretrained weights.

The like label comes from explicit feedback (a rating at or above `labels.like_threshold`) or from
the event type (`labels.like_events`); the rating head learns explicit ratings. Each task's loss
weight is `finetune.weights.<task>`. Early stopping watches validation NDCG@10; the like head's
AUC and the rating head's RMSE are logged beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.config import FinetuneConfig, LabelsConfig, ModelConfig, TrackingConfig
from components.data.dataset import SplitData
from components.models.artifacts import FINETUNED_DIR, PRETRAINED_DIR, TrainedModel, load_trained
from components.models.catalog import build_model, resize_catalog
from components.models.sequences import training_rows
from components.models.vocab import fit_vocab
from components.tracking import Tracker
from components.training.distributed import is_main_process
from components.training.loop import LoopResult, Objective, configure_torch
from components.training.prior_weight import add_own_prior
from components.training.stage import CHECKPOINTS_DIR, load_inputs, run, stage_metrics, validator, write_outputs


@dataclass
class FinetuneSummary:
    out_dir: Path
    init: str
    items: int
    users: int
    rows: int
    epochs: int
    best_epoch: int
    metrics: dict
    seconds: float
    resumed_from: int
    interrupted: bool
    run_id: str | None

    def describe(self) -> str:
        head = (f"finetune (from {self.init}): {self.rows:,} sequences of {self.users:,} users over "
                f"{self.items:,} items")
        resumed = f", resumed after epoch {self.resumed_from}" if self.resumed_from else ""
        if self.interrupted:
            return (f"{head}\n  stopped after epoch {self.epochs} as asked (finetune.stop_after_epoch){resumed}; "
                    "checkpoint kept: run again to resume")
        shown = ", ".join(f"{k.removeprefix('valid_')} {v:.4f}" for k, v in self.metrics.items()
                          if k.startswith("valid_"))
        return (f"{head}\n  {self.epochs} epochs{resumed}, best epoch {self.best_epoch}: valid {shown}, "
                f"{self.seconds:.0f}s\n  wrote {self.out_dir}" + (f" (MLflow run {self.run_id})" if self.run_id else ""))


def objective(cfg: FinetuneConfig) -> Objective:
    return Objective(cfg.weights.model_dump(), cfg.temperature, cfg.softmax_precision)


def transfer(pretrained: TrainedModel, data: SplitData, text: np.ndarray) -> TrainedModel:
    """A model for `data`'s catalog with the pretrained weights: shared layers as they are, ID rows
    matched by item_id (items new to the catalog start fresh), catalog buffers from `data`.
    """
    return resize_catalog(pretrained, data, text, new_rows="fresh", buffers="rebuild")


def finetune_model(data: SplitData, text: np.ndarray, cfg: FinetuneConfig, seed: int, *,
                   pretrained: TrainedModel | None, knobs: ModelConfig | None = None,
                   labels: LabelsConfig = LabelsConfig(), tracker: Tracker | None = None,
                   checkpoint: Path | None = None, params: dict | None = None,
                   curve_stage: str | None = None, history_items: int = 10) -> tuple[TrainedModel, LoopResult]:
    """Fine-tune `pretrained` on `data` (its shape and vocabulary carry over), or a fresh model from `knobs`.

    `labels` (params.labels) says which interactions are likes, for the like head and its validation AUC.
    With `cfg.content_prior` the model then gets its content prior over the users' last `history_items`
    items (`prior_weight.add_own_prior`), recorded in `result.after`.
    """
    configure_torch(cfg.threads, seed)  # fresh weights (new items' ID rows, or all) are part of what the seed fixes
    if pretrained is not None:
        trained = transfer(pretrained, data, text)
    else:
        vocab = fit_vocab(data, knobs.value_buckets, knobs.min_attribute_count)
        trained = TrainedModel(build_model(knobs, data, text, vocab), vocab, data.items["item_id"].astype(str).tolist())
    rows = training_rows(data, trained.vocab, trained.model.config.max_len, cfg.windows, labels)
    validate = validator(trained, data, labels, curve_stage=curve_stage)
    # With nothing new to learn (no like or rating labels in the data) fine-tuning only continues the
    # pretrained retrieval training with a fresh optimiser, and may end below where it began.
    learns_heads = ((cfg.weights.like > 0 and not torch.isnan(rows.likes).all())
                    or (cfg.weights.rating > 0 and not torch.isnan(rows.ratings).all()))
    result = run(trained, data, rows, objective(cfg), cfg, seed, validate=validate, tracker=tracker,
                 checkpoint=checkpoint, params=params, desc="finetune",
                 start_is_candidate=pretrained is not None and not learns_heads)
    if cfg.content_prior and not result.interrupted:
        add_own_prior(trained, result, data, text, cfg.content_norm, history_items, labels)
    return trained, result


def finetune(knobs: ModelConfig, cfg: FinetuneConfig, tracking: TrackingConfig, split_dir: Path,
             features_dir: Path, models_dir: Path, reports_dir: Path, seed: int,
             labels: LabelsConfig = LabelsConfig(), history_items: int = 10) -> FinetuneSummary:
    """Fine-tune on the split; write models/finetuned and reports/finetune.json.

    With init=pretrained the architecture is the pretrained one and `knobs` (params.model) is not read.
    """
    data, text = load_inputs(split_dir, features_dir)
    pretrained = load_trained(Path(models_dir) / PRETRAINED_DIR) if cfg.init == "pretrained" else None
    checkpoint = Path(models_dir) / CHECKPOINTS_DIR / "finetune.pt"
    tracker = Tracker(tracking, "finetune", enabled=is_main_process())
    params = {"stage": "finetune", "seed": seed, "finetune": cfg.model_dump(mode="json"),
              "labels": labels.model_dump(mode="json"),
              "model": (vars(pretrained.model.config) if pretrained else knobs.model_dump(mode="json")),
              "data": {"items": data.n_items, "users": data.n_users, "train": len(data.train)}}
    trained, result = finetune_model(data, text, cfg, seed, pretrained=pretrained, knobs=knobs, labels=labels,
                                     tracker=tracker, checkpoint=checkpoint, params=params,
                                     history_items=history_items)
    out_dir = Path(models_dir) / FINETUNED_DIR
    metrics = stage_metrics(result, {"init": cfg.init})
    if result.interrupted:
        tracker.finish("KILLED")
    elif is_main_process():
        write_outputs(trained, result, out_dir, reports_dir, "finetune", metrics, tracker, checkpoint)
    return FinetuneSummary(out_dir, cfg.init, data.n_items, data.n_users, result.rows, result.epochs,
                           result.best_epoch, metrics, result.seconds, result.resumed_from, result.interrupted,
                           result.run_id)
