"""The pretrain stage: self-supervised next-item prediction over the catalog plus ID-text alignment.

No labels beyond the sequences themselves. `pretrain.extra` adds further datasets (their split and
featurize outputs): their catalogs join the main one and the shared text adapter learns from all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.config import ModelConfig, PretrainConfig, TrackingConfig
from components.data.dataset import SplitData
from components.models.artifacts import PRETRAINED_DIR, TrainedModel
from components.models.catalog import build_model
from components.models.sequences import TrainingRows, training_rows
from components.models.vocab import fit_vocab
from components.tracking import Tracker
from components.training.distributed import is_main_process
from components.training.loop import LoopResult, Objective, configure_torch
from components.training.stage import (
    CHECKPOINTS_DIR,
    combine,
    load_inputs,
    run,
    stage_metrics,
    validator,
    write_outputs,
)

@dataclass
class PretrainSummary:
    out_dir: Path
    datasets: int
    items: int
    users: int
    rows: int
    epochs: int
    best_epoch: int
    valid_ndcg: float
    seconds: float
    resumed_from: int
    interrupted: bool
    run_id: str | None

    def describe(self) -> str:
        head = (f"pretrain: {self.rows:,} sequences of {self.users:,} users over {self.items:,} items "
                f"({self.datasets} dataset{'s' if self.datasets > 1 else ''})")
        resumed = f", resumed after epoch {self.resumed_from}" if self.resumed_from else ""
        if self.interrupted:
            return (f"{head}\n  stopped after epoch {self.epochs} as asked (pretrain.stop_after_epoch){resumed}; "
                    "checkpoint kept: run again to resume")
        return (f"{head}\n  {self.epochs} epochs{resumed}, best epoch {self.best_epoch}: valid NDCG@10 "
                f"{self.valid_ndcg:.4f}, {self.seconds:.0f}s\n  wrote {self.out_dir}"
                + (f" (MLflow run {self.run_id})" if self.run_id else ""))


def objective(cfg: PretrainConfig) -> Objective:
    return Objective(cfg.weights.model_dump(), cfg.temperature, cfg.softmax_precision)


def fresh_model(data: SplitData, text: np.ndarray, knobs: ModelConfig, cfg: PretrainConfig, seed: int
                ) -> tuple[TrainedModel, TrainingRows]:
    """A fresh model for `data`'s catalog (its vocabulary fitted) and the training windows it learns from."""
    configure_torch(cfg.threads, seed)  # the initial weights are part of what the seed fixes
    vocab = fit_vocab(data, knobs.value_buckets, knobs.min_attribute_count)
    trained = TrainedModel(build_model(knobs, data, text, vocab), vocab, data.items["item_id"].astype(str).tolist())
    return trained, training_rows(data, vocab, knobs.max_len, cfg.windows)


def pretrain_model(data: SplitData, text: np.ndarray, knobs: ModelConfig, cfg: PretrainConfig, seed: int, *,
                   tracker: Tracker | None = None, checkpoint: Path | None = None,
                   params: dict | None = None, curve_stage: str | None = None) -> tuple[TrainedModel, LoopResult]:
    """Fit the vocabulary, build a fresh model for `data`'s catalog, and pretrain it."""
    trained, rows = fresh_model(data, text, knobs, cfg, seed)
    validate = validator(trained, data, curve_stage=curve_stage)
    result = run(trained, data, rows, objective(cfg), cfg, seed, validate=validate,
                 tracker=tracker, checkpoint=checkpoint, params=params, desc="pretrain")
    return trained, result


def pretrain(knobs: ModelConfig, cfg: PretrainConfig, tracking: TrackingConfig, split_dir: Path,
             features_dir: Path, models_dir: Path, reports_dir: Path, seed: int) -> PretrainSummary:
    """Pretrain on the split (and `cfg.extra` datasets); write <models>/pretrained and reports/pretrain.json."""
    datasets = [load_inputs(split_dir, features_dir), *(load_inputs(e.split, e.features) for e in cfg.extra)]
    data, text = combine(datasets)
    checkpoint = Path(models_dir) / CHECKPOINTS_DIR / "pretrain.pt"
    tracker = Tracker(tracking, "pretrain", enabled=is_main_process())
    params = {"stage": "pretrain", "seed": seed, "model": knobs.model_dump(mode="json"),
              "pretrain": cfg.model_dump(mode="json"),
              "data": {"items": data.n_items, "users": data.n_users, "train": len(data.train)}}
    trained, result = pretrain_model(data, text, knobs, cfg, seed, tracker=tracker, checkpoint=checkpoint,
                                     params=params)
    out_dir = Path(models_dir) / PRETRAINED_DIR
    if result.interrupted:
        tracker.finish("KILLED")
    elif is_main_process():
        write_outputs(trained, result, out_dir, reports_dir, "pretrain", stage_metrics(result, {}), tracker,
                      checkpoint)
    return PretrainSummary(out_dir, len(datasets), data.n_items, data.n_users, result.rows, result.epochs,
                           result.best_epoch, result.best_score, result.seconds, result.resumed_from,
                           result.interrupted, result.run_id)
