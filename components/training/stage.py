"""What the pretrain and finetune stages share around the loop: inputs, validation, a training run, outputs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.atomic import write_json, write_text
from components.config import LabelsConfig, TrainingConfig
from components.data.dataset import PARTS, SplitData
from components.errors import RecloopError
from components.evaluation import metrics as M
from components.evaluation.evaluator import evaluate_ranking
from components.features.featurize import load_item_text
from components.models.artifacts import TrainedModel, save_trained
from components.models.model import Recloop
from components.models.scoring import RecloopScorer
from components.models.sequences import PrefixRows, TrainingRows, feedback_labels
from components.tracking import Tracker
from components.training.checkpoint import fingerprint, remove_checkpoint
from components.training.distributed import training_device
from components.training.loop import LoopResult, NegativeSampler, Objective, train

CHECKPOINTS_DIR = "checkpoints"


def load_inputs(split_dir: Path, features_dir: Path) -> tuple[SplitData, np.ndarray]:
    """The split tables and the item text vectors aligned with them."""
    data = SplitData.load(split_dir)
    return data, load_item_text(features_dir, data.n_items)


def combine(datasets: list[tuple[SplitData, np.ndarray]]) -> tuple[SplitData, np.ndarray]:
    """Several datasets as one: catalogs and users side by side, the first keeping its ids.

    Ids of the k-th further dataset get a "k:" prefix, so that equal ids from different sources
    stay different items. Text vectors make the catalogs comparable: one adapter reads them all.
    """
    if len(datasets) == 1:
        return datasets[0]
    dims = {text.shape[1] for _, text in datasets}
    if len(dims) > 1:
        raise RecloopError(f"pretrain.extra datasets have text vectors of different sizes {sorted(dims)}: "
                           "featurize them all with the same encoder")
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in ("items", "users", *PARTS)}
    for k, (data, _) in enumerate(datasets):
        prefix = f"{k}:" if k else ""
        for name, collected in frames.items():
            frame = getattr(data, name).drop(columns=["user_idx", "item_idx"], errors="ignore")
            for key in ("user_id", "item_id"):
                if key in frame:
                    frame = frame.assign(**{key: prefix + frame[key].astype(str)})
            collected.append(frame)
    joint = SplitData.from_frames(*(pd.concat(frames[name], ignore_index=True)
                                    for name in ("items", "users", *PARTS)))
    return joint, np.concatenate([text for _, text in datasets]).astype(np.float32)


def head_metrics(scorer: RecloopScorer, data: SplitData, stage: str, labels: LabelsConfig) -> dict[str, float]:
    """The like head's AUC and the rating head's RMSE on `stage`'s targets, where the data has those labels."""
    likes, ratings = feedback_labels(data.targets(stage), scorer.trained.vocab, labels)
    predicted = scorer.head_predictions(data, stage)
    out = {}
    known = ~np.isnan(likes)
    if known.any() and 0 < likes[known].mean() < 1:
        out["like_auc"] = M.auc(likes[known], predicted["like"].to_numpy()[known])
    rated = ~np.isnan(ratings)
    if rated.any():
        out["rating_rmse"] = M.rmse(ratings[rated], predicted["rating"].to_numpy()[rated])
    return out


def validator(trained: TrainedModel, data: SplitData, labels: LabelsConfig | None = None,
              curve_stage: str | None = None) -> Callable[[Recloop], dict[str, float]]:
    """Validation after each epoch: the evaluator's full-ranking NDCG@10 / HR@10 on the valid targets,
    and given `labels` (fine-tuning) the like head's AUC and the rating head's RMSE.
    `curve_stage` (benchmarks' time-to-quality curves) adds the same ranking metrics on that stage;
    they are only recorded, never used to choose an epoch.
    """
    scorer = RecloopScorer(trained, name="recloop-valid")
    scorer.fit(data)

    def validate(model: Recloop) -> dict[str, float]:
        scorer.refresh()
        result = evaluate_ranking(scorer, data, "valid", ks=(10,), progress=False)
        out = {"valid_ndcg@10": result.metrics["ndcg@10"], "valid_hr@10": result.metrics["hr@10"]}
        if curve_stage:
            curve = evaluate_ranking(scorer, data, curve_stage, ks=(10,), progress=False).metrics
            out |= {f"{curve_stage}_ndcg@10": curve["ndcg@10"], f"{curve_stage}_hr@10": curve["hr@10"]}
        if labels is not None:
            out |= {f"valid_{k}": v for k, v in head_metrics(scorer, data, "valid", labels).items()}
        return out

    return validate


def negative_sampler(data: SplitData, n_items: int, cfg: TrainingConfig) -> NegativeSampler | None:
    """The shared-negative sampler of a sampled softmax, or None: full softmax up to `full_softmax_max_items`."""
    if n_items <= cfg.full_softmax_max_items:
        return None
    return NegativeSampler(torch.from_numpy(data.item_popularity()), cfg.sampled_negatives)


def run(trained: TrainedModel, data: SplitData, rows: TrainingRows, objective: Objective, cfg: TrainingConfig,
        seed: int, *, validate: Callable[[Recloop], dict[str, float]], tracker: Tracker | None = None,
        checkpoint: Path | None = None, params: dict | None = None, desc: str = "train",
        start_is_candidate: bool = False, extra_loss: Callable[[], torch.Tensor] | None = None) -> LoopResult:
    """Train with full softmax, or sampled softmax with log-Q correction above `full_softmax_max_items`;
    `extra_loss` is added to every step's loss (see `train`)."""
    model = trained.model
    if cfg.samples == "prefixes":
        rows = PrefixRows.of(rows)
    sampler = negative_sampler(data, model.config.n_items, cfg)
    # Anything that changes what training would do makes an old checkpoint stale.
    knobs = cfg.model_dump(mode="json", exclude={"stop_after_epoch", "threads", "max_minutes", "device"})
    state = model.state_dict()
    key = fingerprint(asdict(model.config), knobs, objective.weights, objective.temperature, seed,
                      rows.sequences.features["items"], list(state), *state.values())
    model.to(training_device(cfg.device))
    try:
        return train(model, rows, objective, cfg, seed=seed, validate=validate,
                     tracker=tracker or Tracker(None, desc), params=params or {}, checkpoint=checkpoint,
                     fingerprint=key, sampler=sampler, desc=desc, start_is_candidate=start_is_candidate,
                     extra_loss=extra_loss)
    finally:
        model.cpu()  # saved, scored and served from the CPU


def stage_metrics(result: LoopResult, extra: dict) -> dict:
    """The stage's metrics JSON: the best epoch's validation numbers and how training went."""
    best = {k: v for k, v in result.best_metrics.items() if k.startswith("valid_")}
    return {**best, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "stopped_early": result.stopped_early, "out_of_time": result.out_of_time,
            "train_seconds": round(result.seconds, 1), **result.after, **extra}


def write_outputs(trained: TrainedModel, result: LoopResult, out_dir: Path, reports_dir: Path, name: str,
                  metrics: dict, tracker: Tracker, checkpoint: Path) -> None:
    """Model folder (atomically), metrics JSON and per-epoch CSV for DVC, artifacts to MLflow; drop the checkpoint."""
    save_trained(trained, out_dir, metrics)
    write_json(Path(reports_dir) / f"{name}.json", metrics)
    write_text(Path(reports_dir) / f"{name}_history.csv", pd.DataFrame(result.history).to_csv(index=False))
    tracker.log_metrics({f"best_{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=result.epochs)
    tracker.log_artifacts(out_dir, name)
    tracker.finish()
    remove_checkpoint(checkpoint)
