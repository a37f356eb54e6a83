"""The finetune stage: multi-task training (retrieval, like, rating) starting from the pretrained weights.

The like label comes from explicit feedback (a rating at or above `like_threshold`) or from the
event type (`like_events`); the rating head learns explicit ratings. Early stopping watches
validation NDCG@10; the like head's AUC and the rating head's RMSE are logged beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.config import FinetuneConfig, ModelConfig, TrackingConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel, load_trained
from components.models.catalog import build_model, check_text, load_catalog
from components.models.model import Recloop
from components.models.sequences import training_rows
from components.models.vocab import fit_vocab
from components.training.loop import LoopResult, Objective, configure_torch, is_main_process
from components.training.pretrain import OUT_DIR as PRETRAINED_DIR
from components.training.stage import CHECKPOINTS_DIR, load_inputs, run, stage_metrics, validator, write_outputs
from components.training.tracking import Tracker

OUT_DIR = "finetuned"


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
    return Objective({"retrieval": cfg.retrieval_weight, "like": cfg.like_weight, "rating": cfg.rating_weight,
                      "contrastive": cfg.contrastive_weight}, cfg.temperature)


def transfer(pretrained: TrainedModel, data: SplitData, text: np.ndarray) -> TrainedModel:
    """A model for `data`'s catalog with the pretrained weights: shared layers as they are, ID rows
    matched by item_id (items new to the catalog start fresh), catalog buffers from `data`.
    """
    text = check_text(text, data)
    source = pretrained.model
    if text.shape[1] != source.config.text_dim:
        raise RecloopError(f"the pretrained model reads {source.config.text_dim}-d text vectors but "
                           f"the features hold {text.shape[1]}-d ones: featurize with the same encoder")
    model = Recloop(replace(source.config, n_items=data.n_items))
    per_catalog = {"tower.id_embedding.weight", *(f"tower.{name}" for name, _ in source.tower.named_buffers())}
    shared = {k: v for k, v in source.state_dict().items() if k not in per_catalog}
    model.load_state_dict(shared, strict=False)
    if model.tower.id_embedding is not None:
        rows = pd.Index(pretrained.item_ids).get_indexer(data.items["item_id"].astype(str))
        known = torch.from_numpy(rows >= 0)
        with torch.no_grad():
            model.tower.id_embedding.weight[known] = source.tower.id_embedding.weight[torch.from_numpy(rows[rows >= 0])]
    load_catalog(model, data, text, pretrained.vocab)
    return TrainedModel(model, pretrained.vocab, data.items["item_id"].astype(str).tolist())


def finetune_model(data: SplitData, text: np.ndarray, cfg: FinetuneConfig, seed: int, *,
                   pretrained: TrainedModel | None, knobs: ModelConfig | None = None, tracker: Tracker | None = None,
                   checkpoint: Path | None = None, params: dict | None = None,
                   curve_stage: str | None = None) -> tuple[TrainedModel, LoopResult]:
    """Fine-tune `pretrained` on `data` (its shape and vocabulary carry over), or a fresh model from `knobs`."""
    configure_torch(cfg.threads, seed)  # fresh weights (new items' ID rows, or all) are part of what the seed fixes
    if pretrained is not None:
        trained = transfer(pretrained, data, text)
    else:
        vocab = fit_vocab(data, knobs.value_buckets, knobs.min_attribute_count)
        trained = TrainedModel(build_model(knobs, data, text, vocab), vocab, data.items["item_id"].astype(str).tolist())
    rows = training_rows(data, trained.vocab, trained.model.config.max_len, cfg.windows, cfg.like_threshold,
                         cfg.like_events)
    validate = validator(trained, data, heads=(cfg.like_threshold, cfg.like_events), curve_stage=curve_stage)
    # With nothing new to learn (no like or rating labels in the data) fine-tuning only continues the
    # pretrained retrieval training with a fresh optimiser, and may end below where it began.
    learns_heads = ((cfg.like_weight > 0 and not torch.isnan(rows.likes).all())
                    or (cfg.rating_weight > 0 and not torch.isnan(rows.ratings).all()))
    result = run(trained, data, rows, objective(cfg), cfg, seed, validate=validate, tracker=tracker,
                 checkpoint=checkpoint, params=params, desc="finetune",
                 start_is_candidate=pretrained is not None and not learns_heads)
    return trained, result


def finetune(knobs: ModelConfig, cfg: FinetuneConfig, tracking: TrackingConfig, split_dir: Path,
             features_dir: Path, models_dir: Path, reports_dir: Path, seed: int) -> FinetuneSummary:
    """Fine-tune on the split; write models/finetuned and reports/finetune.json.

    With init=pretrained the architecture is the pretrained one and `knobs` (params.model) is not read.
    """
    data, text = load_inputs(split_dir, features_dir)
    pretrained = load_trained(Path(models_dir) / PRETRAINED_DIR) if cfg.init == "pretrained" else None
    checkpoint = Path(models_dir) / CHECKPOINTS_DIR / "finetune.pt"
    tracker = Tracker(tracking, "finetune", enabled=is_main_process())
    params = {"stage": "finetune", "seed": seed, "finetune": cfg.model_dump(mode="json"),
              "model": (vars(pretrained.model.config) if pretrained else knobs.model_dump(mode="json")),
              "data": {"items": data.n_items, "users": data.n_users, "train": len(data.train)}}
    trained, result = finetune_model(data, text, cfg, seed, pretrained=pretrained, knobs=knobs, tracker=tracker,
                                     checkpoint=checkpoint, params=params)
    out_dir = Path(models_dir) / OUT_DIR
    metrics = stage_metrics(result, {"init": cfg.init})
    if result.interrupted:
        tracker.finish("KILLED")
    elif is_main_process():
        write_outputs(trained, result, out_dir, reports_dir, "finetune", metrics, tracker, checkpoint)
    return FinetuneSummary(out_dir, cfg.init, data.n_items, data.n_users, result.rows, result.epochs,
                           result.best_epoch, metrics, result.seconds, result.resumed_from, result.interrupted,
                           result.run_id)
