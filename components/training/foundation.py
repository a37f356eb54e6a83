"""The foundation stage: one model pretrained on several catalogs with item text, each tagged with its domain.

Each source is a dataset's split and featurize outputs (`recloop prepare` or the pipeline's own
stages make them). Its interactions and items carry a domain (scenario) token: the one ingest
wrote, or `foundation.sources[].domain`. The catalogs are pretrained together as one (ids kept
apart, `stage.combine`) with the pretrain objective and `pretrain`'s training knobs; then only the
transferable part is kept (`components/models/foundation.py`): a foundation any catalog featurized
with the same encoder can adopt (`recloop transfer`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.atomic import write_json
from components.config import FoundationConfig, ModelConfig, PretrainConfig, TrackingConfig
from components.data.dataset import PARTS, SplitData
from components.errors import RecloopError
from components.models.artifacts import FOUNDATION_DIR
from components.models.foundation import Foundation, foundation_of, save_foundation
from components.tracking import Tracker
from components.training.checkpoint import remove_checkpoint
from components.training.distributed import is_main_process
from components.training.loop import LoopResult
from components.training.pretrain import pretrain_model
from components.training.stage import CHECKPOINTS_DIR, combine, load_inputs, stage_metrics


@dataclass
class FoundationSummary:
    out_dir: Path
    sources: list[dict]
    rows: int
    epochs: int
    best_epoch: int
    valid_ndcg: float
    parameters: int
    seconds: float
    interrupted: bool
    run_id: str | None
    registered: int | None = None  # version of foundation.registered_model, when registered

    def describe(self) -> str:
        catalogs = ", ".join(f"{s['domain']} ({s['items']:,} items, {s['users']:,} users)" for s in self.sources)
        head = f"foundation: {self.rows:,} sequences over {len(self.sources)} catalogs: {catalogs}"
        if self.interrupted:
            return f"{head}\n  stopped after epoch {self.epochs} as asked; checkpoint kept: run again to resume"
        return (f"{head}\n  {self.epochs} epochs, best epoch {self.best_epoch}: valid NDCG@10 {self.valid_ndcg:.4f}, "
                f"{self.seconds:.0f}s; {self.parameters:,} transferable parameters\n  wrote {self.out_dir}"
                + (f" (MLflow run {self.run_id})" if self.run_id else "")
                + (f"\n  registered as version {self.registered}" if self.registered else ""))


def tag_domain(data: SplitData, domain: str) -> SplitData:
    """`data` with every interaction and item marked as `domain` (its scenario token)."""
    return SplitData(data.items.assign(domain=domain), data.users,
                     *(getattr(data, part).assign(domain=domain) for part in PARTS))


def domains_of(data: SplitData) -> list[str]:
    return sorted(data.train.get("domain", pd.Series(["default"])).astype(str).unique())


def describe_sources(datasets: list[tuple[SplitData, np.ndarray]]) -> list[dict]:
    return [{"domain": ",".join(domains_of(data)), "items": data.n_items, "users": data.n_users,
             "interactions": len(data.train) + len(data.valid) + len(data.test)} for data, _ in datasets]


def load_sources(cfg: FoundationConfig) -> list[tuple[SplitData, np.ndarray]]:
    """Each source's split and text vectors, retagged where the source names a domain."""
    if not cfg.sources:
        raise RecloopError("foundation.sources is empty: list each catalog's split and features folders "
                           "(see docs/transfer.md)")
    out = []
    for source in cfg.sources:
        data, text = load_inputs(source.split, source.features)
        out.append((tag_domain(data, source.domain) if source.domain else data, text))
    domains = [",".join(domains_of(data)) for data, _ in out]
    if len(set(domains)) < len(domains):
        raise RecloopError(f"foundation sources share a domain token ({domains}): give each its own "
                           "foundation.sources[].domain so the model can tell the scenarios apart")
    return out


def pretrain_foundation(datasets: list[tuple[SplitData, np.ndarray]], knobs: ModelConfig, cfg: PretrainConfig,
                        seed: int, *, tracker: Tracker | None = None, checkpoint: Path | None = None,
                        params: dict | None = None) -> tuple[Foundation, LoopResult]:
    """Pretrain one model on the catalogs together; keep its transferable part."""
    data, text = combine(datasets)
    trained, result = pretrain_model(data, text, knobs, cfg, seed, tracker=tracker, checkpoint=checkpoint,
                                     params=params)
    return foundation_of(trained, describe_sources(datasets)), result


def foundation(knobs: ModelConfig, pretrain: PretrainConfig, cfg: FoundationConfig, tracking: TrackingConfig,
               models_dir: Path, reports_dir: Path, seed: int) -> FoundationSummary:
    """Pretrain a foundation on `cfg.sources` with `pretrain`'s knobs at `cfg.lr`; write <models>/foundation and
    reports/foundation.json."""
    datasets = load_sources(cfg)
    sources = describe_sources(datasets)
    pretrain = cfg.pretraining(pretrain)
    checkpoint = Path(models_dir) / CHECKPOINTS_DIR / "foundation.pt"
    tracker = Tracker(tracking, "foundation", enabled=is_main_process())
    params = {"stage": "foundation", "seed": seed, "model": knobs.model_dump(mode="json"),
              "pretrain": pretrain.model_dump(mode="json"), "sources": sources}
    found, result = pretrain_foundation(datasets, knobs, pretrain, seed, tracker=tracker, checkpoint=checkpoint,
                                        params=params)
    out_dir = Path(models_dir) / FOUNDATION_DIR
    metrics = stage_metrics(result, {"domains": [s["domain"] for s in sources],
                                     "transferable_parameters": found.parameters()})
    if result.interrupted:
        tracker.finish("KILLED")
    elif is_main_process():
        save_foundation(found, out_dir, metrics)
        write_json(Path(reports_dir) / "foundation.json", metrics)
        tracker.log_artifacts(out_dir, "foundation")
        tracker.finish()
        remove_checkpoint(checkpoint)
    return FoundationSummary(out_dir, sources, result.rows, result.epochs, result.best_epoch, result.best_score,
                             found.parameters(), result.seconds, result.interrupted, result.run_id)
