"""The transfer stage: a foundation brought to the pipeline's catalog, in one of three modes.

- `zero-shot`: the catalog is adopted (`models/foundation.adopt`) and served by text, attributes
  and context alone; nothing trains on it. With `transfer.content_prior` the model is saved with a
  content prior (`training/zero_shot.zero_shot_prior`: the catalog's text vectors normalised as
  `transfer.content_norm` says, and the weight the `transfer.blend_on` catalogs choose), which
  evaluate and the service blend its scores with (`models/content_prior.py`).
- `adapter`: the same start, then only the state-dict prefixes in `transfer.adapter_trains` learn
  (by default the text adapter, the new ID table, the domain rows and the heads); every other
  weight stays bit for bit the foundation's.
- `full`: the same start, then every weight fine-tunes.

Training modes use the fine-tuning knobs (`finetune`) and its objective with the ID-text alignment
at `transfer.contrastive` (the new ID rows learn to agree with the text, as pretraining from scratch
teaches them); the start (the foundation with fresh ID rows) is a candidate for the best epoch, so a
transfer never ends below where it started on validation. With `transfer.pretrain_first` they first
run the target's self-supervised pretraining (the pretrain objective and `pretrain` knobs) from the
foundation, then the fine-tune: the two phases a model trained from scratch gets. `transfer.shrink`
below 1 mixes a fresh initialisation into the foundation's learning weights first (shrink and perturb).
The result is written where the finetune stage writes, so evaluate, package and serve read it; its
`metrics.json` records the mode (`mode`), which the service's answers report (docs/serving.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.atomic import write_json
from components.config import (
    FinetuneConfig,
    FoundationSource,
    LabelsConfig,
    LMTuningConfig,
    PretrainConfig,
    TrackingConfig,
    TransferConfig,
)
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import FINETUNED_DIR, TrainedModel, save_trained
from components.models.catalog import per_catalog_names
from components.models.foundation import Foundation, adopt, load_foundation
from components.models.model import Recloop
from components.models.sequences import training_rows
from components.tracking import Tracker
from components.training.checkpoint import remove_checkpoint
from components.training.distributed import is_main_process
from components.training.foundation import tag_domain
from components.training.loop import LoopResult, Objective, configure_torch
from components.training.pretrain import objective as pretrain_objective
from components.training.prior_weight import add_own_prior
from components.training.stage import CHECKPOINTS_DIR, load_inputs, run, stage_metrics, validator, write_outputs

MODES = ("zero-shot", "adapter", "full")


@dataclass
class TransferSummary:
    out_dir: Path
    mode: str
    items: int
    users: int
    trainable: int
    parameters: int
    epochs: int
    metrics: dict
    seconds: float
    run_id: str | None

    def describe(self) -> str:
        shown = ", ".join(f"{k.removeprefix('valid_')} {v:.4f}" for k, v in self.metrics.items()
                          if k.startswith("valid_"))
        trained = (f"{self.epochs} epochs, {self.seconds:.0f}s, " if self.mode != "zero-shot" else "no training, ")
        return (f"transfer ({self.mode}): {self.users:,} users, {self.items:,} items\n  {trained}"
                f"{self.trainable:,} of {self.parameters:,} parameters trained "
                f"({self.trainable / max(self.parameters, 1):.1%}); valid {shown}\n  wrote {self.out_dir}"
                + (f" (MLflow run {self.run_id})" if self.run_id else ""))


def trains(name: str, mode: str, adapter_trains: list[str]) -> bool:
    """Whether parameter `name` learns in `mode`."""
    if mode == "full":
        return True
    if mode == "adapter":
        return any(name == p or name.startswith(p + ".") for p in adapter_trains)
    return False


def set_trainable(model: Recloop, mode: str, adapter_trains: list[str]) -> tuple[int, int]:
    """Freeze what `mode` keeps; (trainable, total) parameter counts."""
    if mode not in MODES:
        raise RecloopError(f"transfer.mode {mode!r} is not one of {', '.join(MODES)}")
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in adapter_trains if not any(n == p or n.startswith(p + ".") for n in names)]
    if mode == "adapter" and unknown:
        raise RecloopError(f"transfer.adapter_trains names no parameter of this model: {unknown} "
                           "(a prefix of a parameter name, e.g. tower.text_adapter, task_heads)")
    trainable = total = 0
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name, mode, adapter_trains))
        trainable += p.numel() if p.requires_grad else 0
        total += p.numel()
    return trainable, total


def shrink_toward_fresh(model: Recloop, names: set[str], keep: float) -> int:
    """Shrink and perturb (Ash & Adams, 2020): each named parameter that learns becomes `keep` x itself +
    (1 - keep) x a freshly initialised model's; the number of parameters moved.

    A warm start can generalise worse than a fresh one once the target has plenty of data; mixing in
    a fresh initialisation keeps the foundation's direction and gives back some of a fresh model's
    plasticity. `keep` 1 leaves the foundation's weights as they are.
    """
    if keep >= 1.0:
        return 0
    fresh = Recloop(model.config).state_dict()
    moved = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in names and p.requires_grad:
                p.mul_(keep).add_(fresh[name], alpha=1.0 - keep)
                moved += p.numel()
    return moved


def objective(cfg: TransferConfig, finetune: FinetuneConfig) -> Objective:
    """The fine-tuning objective with the ID-text alignment weighted by `transfer.contrastive`."""
    return Objective({**finetune.weights.model_dump(), "contrastive": cfg.contrastive}, finetune.temperature,
                     finetune.softmax_precision)


def pretrain_checkpoint(checkpoint: Path | None) -> Path | None:
    """Where the pretraining phase of `transfer.pretrain_first` keeps its own resumable state."""
    return None if checkpoint is None else Path(checkpoint).with_name(Path(checkpoint).stem + "-pretrain.pt")


def transfer_model(foundation: Foundation, data: SplitData, text: np.ndarray, cfg: TransferConfig,
                   finetune: FinetuneConfig, seed: int, *, labels: LabelsConfig = LabelsConfig(),
                   pretrain: PretrainConfig = PretrainConfig(), tracker: Tracker | None = None,
                   checkpoint: Path | None = None, params: dict | None = None,
                   curve_stage: str | None = None) -> tuple[TrainedModel, LoopResult | None, dict]:
    """The foundation on `data`'s catalog in `cfg.mode`; (model, loop result or None for zero-shot, info).

    `info` holds the mode, trainable and total parameter counts, for zero-shot the validation metrics,
    and with `cfg.pretrain_first` how the target's pretraining phase (`pretrain` knobs) went; the loop
    result is the fine-tune's (or the pretraining phase's, when that was interrupted).
    """
    mode, adapter_trains = cfg.mode, cfg.adapter_trains
    configure_torch(finetune.threads, seed)  # the new ID rows are part of what the seed fixes
    trained = adopt(foundation, data, text, ids=mode != "zero-shot", id_dropout=cfg.id_dropout,
                    cosine=mode == "zero-shot" and cfg.zero_shot_scores == "cosine")
    trainable, total = set_trainable(trained.model, mode, adapter_trains)
    info = {"mode": mode, "trainable_parameters": trainable, "parameters": total,
            "trainable_share": round(trainable / max(total, 1), 4)}
    if mode != "zero-shot" and cfg.shrink < 1.0:
        transferred = set(foundation.state) - per_catalog_names(trained.model)
        info["shrunk_parameters"] = shrink_toward_fresh(trained.model, transferred, cfg.shrink)
    validate = validator(trained, data, labels, curve_stage=curve_stage)
    if mode == "zero-shot":
        return trained, None, info | validate(trained.model)
    try:
        if cfg.pretrain_first:
            first = run(trained, data, training_rows(data, trained.vocab, trained.model.config.max_len,
                                                     pretrain.windows),
                        pretrain_objective(pretrain), pretrain, seed, validate=validate,
                        checkpoint=pretrain_checkpoint(checkpoint), desc=f"transfer-{mode}-pretrain",
                        start_is_candidate=True)  # one MLflow run per stage: this phase is summarised in `info`
            info |= {"pretrain_epochs": first.epochs, "pretrain_best_epoch": first.best_epoch,
                     "pretrain_valid_ndcg@10": round(first.best_score, 5),
                     "pretrain_seconds": round(first.seconds, 1)}
            if first.interrupted:
                return trained, first, info
        rows = training_rows(data, trained.vocab, trained.model.config.max_len, finetune.windows, labels)
        result = run(trained, data, rows, objective(cfg, finetune), finetune, seed, validate=validate,
                     tracker=tracker, checkpoint=checkpoint, params=params, desc=f"transfer-{mode}",
                     start_is_candidate=True)
    finally:
        for p in trained.model.parameters():
            p.requires_grad_(True)
    return trained, result, info


def with_content_prior(trained: TrainedModel, foundation: Foundation, data: SplitData, text: np.ndarray,
                       cfg: TransferConfig, blend_on: list[FoundationSource], history_items: int,
                       labels: LabelsConfig = LabelsConfig()) -> dict:
    """Give a zero-shot model its content prior (weight chosen on `blend_on`'s catalogs unless
    `cfg.blend_weight` fixes it); the metrics to record: the prior (`content_prior`) and the validation
    metrics as served, blended (`valid_*`), and of the model alone (`model_only_valid_*`)."""
    # Here, not at the top: the service imports this module (MODES), and zero_shot brings in the evaluation
    # baselines' dependencies (implicit, threadpoolctl), which the portable served model does not pin.
    from components.training.zero_shot import zero_shot_prior

    alone = validator(trained, data, labels)(trained.model)
    catalogs = [] if cfg.blend_weight is not None else [
        (tag_domain(d, source.domain) if source.domain else d, t)  # the domain only names it in the record
        for source in blend_on for d, t in [load_inputs(source.split, source.features)]]
    trained.prior, prior = zero_shot_prior(foundation, text, catalogs, normalisation=cfg.content_norm,
                                           history_items=history_items, cosine=trained.model.config.cosine,
                                           weight=cfg.blend_weight)
    return {**validator(trained, data, labels)(trained.model), "content_prior": prior,
            **{f"model_only_{k}": v for k, v in alone.items()}}


def transfer(cfg: TransferConfig, finetune: FinetuneConfig, labels: LabelsConfig, tracking: TrackingConfig,
             foundation_dir: Path, split_dir: Path, features_dir: Path, models_dir: Path, reports_dir: Path,
             seed: int, lm: LMTuningConfig = LMTuningConfig(), pretrain: PretrainConfig = PretrainConfig(),
             blend_on: list[FoundationSource] | None = None, history_items: int = 10) -> TransferSummary:
    """Bring the foundation at `foundation_dir` to the split's catalog; write models/finetuned, reports/transfer.json.

    With `lm.enabled` (adapter and full modes) the text encoder then learns too (LoRA,
    `training/lm_tuning.py`) and the saved model carries the text vectors of the tuned encoder. With
    `cfg.content_prior` the model carries its content prior: in zero-shot mode its weight is chosen on
    `blend_on` (`with_content_prior`; the stage passes transfer.blend_on, else foundation.sources), in
    adapter and full modes on the target's own validation, after training (`prior_weight.add_own_prior`).
    """
    blended = cfg.mode == "zero-shot" and cfg.content_prior
    if blended and cfg.blend_weight is None and not blend_on:
        raise RecloopError("transfer.content_prior chooses its weight on other catalogs than the target: list "
                           "them (each {split, features}) in transfer.blend_on or foundation.sources, or set "
                           "transfer.blend_weight, or transfer.content_prior=false (docs/transfer.md)")
    data, text = load_inputs(split_dir, features_dir)
    found = load_foundation(foundation_dir)
    checkpoint = Path(models_dir) / CHECKPOINTS_DIR / "transfer.pt"
    tracker = Tracker(tracking, f"transfer-{cfg.mode}", enabled=is_main_process())
    params = {"stage": "transfer", "seed": seed, "transfer": cfg.model_dump(mode="json"),
              "finetune": finetune.model_dump(mode="json"), "foundation_sources": found.sources,
              "data": {"items": data.n_items, "users": data.n_users, "train": len(data.train)}}
    if cfg.pretrain_first:
        params["pretrain"] = pretrain.model_dump(mode="json")
    trained, result, info = transfer_model(found, data, text, cfg, finetune, seed, labels=labels, pretrain=pretrain,
                                           tracker=tracker, checkpoint=checkpoint, params=params)
    out_dir = Path(models_dir) / FINETUNED_DIR
    extra = {k: v for k, v in info.items() if not k.startswith("valid_")}
    extra["foundation"] = str(foundation_dir)
    if result is None:
        extra["scoring"] = "cosine" if trained.model.config.cosine else "dot"
        if blended:
            info |= with_content_prior(trained, found, data, text, cfg, blend_on, history_items, labels)
            extra |= {k: v for k, v in info.items() if not k.startswith("valid_")}
        metrics = {**{k: v for k, v in info.items() if k.startswith("valid_")}, "epochs": 0,
                   "train_seconds": 0.0, **extra}
        if is_main_process():
            tracker.start()
            tracker.log_params(params)
            save_trained(trained, out_dir, metrics)
            write_json(Path(reports_dir) / "transfer.json", metrics)
            tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)}, step=0)
            tracker.log_artifacts(out_dir, "transfer")
            tracker.finish()
        return TransferSummary(out_dir, cfg.mode, data.n_items, data.n_users, info["trainable_parameters"],
                               info["parameters"], 0, metrics, 0.0, tracker.run_id)
    if lm.enabled and not result.interrupted:
        from components.training.lm_tuning import tune_if_better

        set_trainable(trained.model, cfg.mode, cfg.adapter_trains)  # adapter mode keeps its frozen part frozen
        try:
            extra |= tune_if_better(trained, data, lm, seed, validator(trained, data, labels), finetune.threads)
        finally:
            for p in trained.model.parameters():
                p.requires_grad_(True)
    if cfg.content_prior and not result.interrupted:  # the target has interactions: its own validation chooses
        add_own_prior(trained, result, data, text, cfg.content_norm, history_items, labels)
    metrics = stage_metrics(result, extra)
    if result.interrupted:
        tracker.finish("KILLED")
    elif is_main_process():
        write_outputs(trained, result, out_dir, reports_dir, "transfer", metrics, tracker, checkpoint)
        remove_checkpoint(pretrain_checkpoint(checkpoint))
    return TransferSummary(out_dir, cfg.mode, data.n_items, data.n_users, info["trainable_parameters"],
                           info["parameters"], result.epochs, metrics, result.seconds, result.run_id)
