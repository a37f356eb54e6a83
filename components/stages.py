"""The stage table: each pipeline stage's params -> library call -> summary, written once.

Every door reads it: `recloop <stage>` (which `dvc.yaml` runs), the Prefect fan-out in `flows/`,
and the tests. Library functions are imported when a stage runs or `Stage.library` is read, so
that `recloop params` and `--help` stay quick.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import Params


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: what it reads from params and how it calls its library function."""

    name: str
    doc: str                      # one paragraph: what the stage does (its `--help`)
    target: str                   # "module:function" of the library function it calls
    sections: tuple[str, ...]     # params sections (or dotted keys) it reads
    transient: bool               # may fail for passing reasons (network share, hub, tracking server): retried
    compose: Callable[[Callable[..., Any], Params], Any]  # (library function, params) -> summary

    @property
    def library(self) -> Callable[..., Any]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)

    def run(self, params: Params) -> Any:
        """Call the library function with this stage's part of `params`; returns its summary (`.describe()`)."""
        return self.compose(self.library, params)


def _training(run: Callable[..., Any], p: Params, cfg: Any, **extra: Any) -> Any:
    return run(p.model, cfg, p.tracking, p.paths.split, p.paths.features, p.paths.models, p.paths.reports, p.seed,
               **extra)


_STAGES = [
    Stage("ingest", "Read the source named in params (ingest.source, ingest.path) into canonical Parquet tables.",
          "components.data.ingest:ingest", ("ingest", "paths"), True,
          lambda run, p: run(p.ingest, p.paths.canonical, p.paths.reports)),
    Stage("validate", "Check the canonical tables with Great Expectations; quarantine bad rows with a reason.",
          "components.validation.validate:validate", ("validate", "paths"), False,
          lambda run, p: run(p.validate_, p.paths.canonical, p.paths.validated, p.paths.reports)),
    Stage("split", "Leave-one-out by time (or the source's own split), k-core filtering, cold-item holdout, "
          "live windows.",
          "components.data.split:split", ("seed", "split", "paths"), False,
          lambda run, p: run(p.split, p.paths.validated, p.paths.split, p.paths.reports, p.seed)),
    Stage("featurize", "Encode each item's text with the language model (cached by text hash) into item vectors.",
          "components.features.featurize:featurize", ("featurize", "paths"), True,
          lambda run, p: run(p.featurize, p.paths.split, p.paths.features)),
    # Training resumes from its checkpoint when run again, but its failures (a bug, out of memory) repeat.
    Stage("pretrain", "Self-supervised pretraining: next item over the catalog + ID/text alignment; resumes from "
          "a checkpoint.",
          "components.training.pretrain:pretrain", ("seed", "model", "pretrain", "tracking", "paths"), False,
          lambda run, p: _training(run, p, p.pretrain)),
    Stage("finetune", "Multi-task fine-tuning (retrieval, like, rating) from the pretrained weights; early stopping "
          "on NDCG@10.",
          "components.training.finetune:finetune",
          ("seed", "model", "finetune", "labels", "evaluate.content", "tracking", "paths"), False,
          lambda run, p: _training(run, p, p.finetune, labels=p.labels, history_items=p.evaluate.content.history_items)),
    Stage("evaluate", "Full-ranking evaluation of each model in evaluate.models on valid and test: metrics, slices, "
          "plots, report.",
          "components.evaluation.evaluate:evaluate", ("seed", "evaluate", "tracking.uri", "paths"), True,
          lambda run, p: run(p.evaluate, p.paths.split, p.paths.features, p.paths.reports, seed=p.seed,
                             models_dir=p.paths.models, tracking_uri=p.tracking.uri)),
    Stage("package", "Log the fine-tuned model and what serving needs to the MLflow registry as a new `challenger` "
          "version.",
          "components.serving.package:package", ("registry", "paths"), True,
          lambda run, p: run(p.registry, p.paths)),
]

# In pipeline order.
STAGES: dict[str, Stage] = {s.name: s for s in _STAGES}
# Stages that train: they run in one process or as one rank of torchrun.
TRAINING = ("pretrain", "finetune")


@dataclass
class MonitorRun:
    """A monitoring run's summary and the window it judged (the drift event names that file)."""

    summary: Any  # components.monitoring.monitor.MonitorSummary
    current: Path

    def describe(self) -> str:
        return self.summary.describe()


def monitor_stage(params: Params, reference: Path | None = None, current: Path | None = None,
                  feedback: Path | None = None, reference_feedback: Path | None = None) -> MonitorRun:
    """Drift report of `current` (default: the newest live window) against `reference` (default: the
    training split), with the pipeline's item text vectors where featurize wrote them; with a feedback
    log whose lists carry propensities, the off-policy estimate of models/finetuned under policy.target."""
    from components.models.artifacts import FINETUNED_DIR
    from components.monitoring.monitor import default_inputs, monitor
    from components.monitoring.off_policy import default_estimator

    inputs = default_inputs(params.paths.split, params.paths.features, reference, current)
    off_policy = default_estimator(params.policy, params.paths.split, Path(params.paths.models) / FINETUNED_DIR,
                                   params.serve.candidates, params.seed)
    summary = monitor(params.monitor, report_dir=params.paths.reports / "monitoring", feedback=feedback,
                      reference_feedback=reference_feedback, seed=params.seed, labels=params.labels,
                      off_policy=off_policy, **inputs)
    return MonitorRun(summary, Path(inputs["current"]))


def ope_stage(params: Params, feedback: Path | None = None, challenger: Path | None = None) -> Any:
    """Off-policy estimate (`recloop ope`) of a challenger model (default: the finetune stage's) with the
    policy policy.target, against the champion's logged value, on the feedback log (default:
    serve.feedback_log); the report goes to <paths.reports>/ope."""
    from components.data.dataset import SplitData
    from components.models.artifacts import FINETUNED_DIR, load_trained
    from components.policy.feedback_ope import ope_compare
    from components.serving.feedback import feedback_interactions, read_feedback, store_location

    frame = read_feedback(feedback or store_location(params.serve))
    trained = load_trained(challenger or Path(params.paths.models) / FINETUNED_DIR)
    return ope_compare(params.policy, frame, SplitData.load(params.paths.split), trained,
                       feedback_interactions(frame), params.serve.candidates, params.seed,
                       report_dir=Path(params.paths.reports) / "ope")


def feedback_rotate_stage(params: Params, now: float | None = None) -> Any:
    """Archive the feedback store's rows older than serve.feedback_keep_days (`recloop feedback-rotate`)."""
    from components.serving.feedback_rotation import rotate_feedback

    return rotate_feedback(params.serve, now)


def simulate_stage(params: Params, work_dir: Path | None = None,
                   on_window: Callable[[Any], None] | None = None) -> Any:
    """Replay the MovieLens history at ingest.path through the loop (`recloop simulate`): train up to
    simulate.cutoff, then monitor, retrain and gate window by window; `on_window` sees each step."""
    from components.continual.simulate import simulate
    from components.data.sources.movielens import movielens_stream
    from components.features.text import cached_text

    stream, catalog = movielens_stream(params.ingest.path, params.simulate)
    f = params.featurize
    pretrain = params.pretrain if params.finetune.init == "pretrained" else None
    return simulate(stream, catalog, cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir),
                    model=params.model, pretrain=pretrain, finetune=params.finetune, continual=params.continual,
                    monitor_cfg=params.monitor, cfg=params.simulate, labels=params.labels,
                    work_dir=work_dir or Path(params.paths.reports) / "simulate", seed=params.seed,
                    on_window=on_window)


def _foundation(run: Callable[..., Any], p: Params) -> Any:
    summary = run(p.model, p.pretrain, p.foundation, p.tracking, p.paths.models, p.paths.reports, p.seed)
    if p.foundation.registered_model and not summary.interrupted:
        from components.registry.foundation import register_foundation

        summary.registered = register_foundation(p.registry, p.foundation.registered_model, summary.out_dir,
                                                 {"valid_ndcg@10": summary.valid_ndcg})
    return summary


# The foundation pipeline's stages (pipelines/foundation/dvc.yaml): apart from STAGES, so that `dvc repro`
# (./dvc.yaml) never pretrains a foundation; `dvc repro pipelines/foundation/dvc.yaml` and flows/foundation.py do.
FOUNDATION_STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("foundation", "Pretrain one model on several catalogs (foundation.sources) and keep what transfers; "
          "register it as a new version of foundation.registered_model when that is set.",
          "components.training.foundation:foundation",
          ("seed", "model", "pretrain", "foundation", "tracking", "registry", "paths"), False, _foundation),
]}


def foundation_stage(params: Params) -> Any:
    """Pretrain a foundation on foundation.sources (`recloop foundation`) with the model and pretrain knobs;
    register it as a new version of foundation.registered_model when that is set."""
    return FOUNDATION_STAGES["foundation"].run(params)


def kg_stage(params: Params) -> Any:
    """Ingest the knowledge graph at kg.path, validate it against the validated items (quarantine, report)
    and write it to paths.kg (`recloop kg`), where model.sources.kg can point (docs/fusion.md)."""
    from components.data.schema import ITEMS_FILE
    from components.validation.kg import kg_stage as validate_kg_stage

    return validate_kg_stage(params.kg, params.paths.validated / ITEMS_FILE, params.paths.kg)


def kg_embed_stage(params: Params) -> Any:
    """Pretrain entity embeddings of the validated graph at paths.kg with PyKEEN (kg_embed) and write each linked
    item's vector to paths.kg_embeddings (`recloop kg-embed`), a table model.sources.vectors can read."""
    from components.features.kg_embeddings import kg_embed

    cfg = params.kg_embed
    seed = params.seed if cfg.seed is None else cfg.seed
    return kg_embed(cfg, params.paths.kg, params.paths.kg_embeddings, seed)


def transfer_stage(params: Params) -> Any:
    """Bring the foundation at transfer.foundation (a folder or a models:/ URI) to the split's catalog in
    transfer.mode (`recloop transfer`), then tune the text encoder when lm_tuning.enabled; writes the
    fine-tuned model that evaluate, package and serve read. A zero-shot model's content prior takes its
    weight from transfer.blend_on's catalogs, else from foundation.sources."""
    from components.registry.foundation import foundation_folder
    from components.training.transfer import transfer

    p = params
    return transfer(p.transfer, p.finetune, p.labels, p.tracking, foundation_folder(p.registry, p.transfer.foundation),
                    p.paths.split, p.paths.features, p.paths.models, p.paths.reports, p.seed, lm=p.lm_tuning,
                    pretrain=p.pretrain, blend_on=p.transfer.blend_on or p.foundation.sources,
                    history_items=p.evaluate.content.history_items)
