"""The evaluate stage: fit each model named in params, rank the full catalog on valid and test, report.

Models come from `MODELS`, a dict of name -> factory(ModelContext) -> Recommender. Another model
joins the comparison by adding a factory there (for example one that loads a trained checkpoint
from `context.models_dir`) and its name to `evaluate.models` in params.yaml.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.config import EvaluateConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.baselines import ContentKNN, ImplicitALS, ImplicitBPR, ItemKNN, MostPopular
from components.evaluation.evaluator import RankingResult, evaluate_ranking
from components.evaluation.protocol import Recommender
from components.evaluation.report import headline_stage, metrics_tree, write_report
from components.tracking import ensure_experiment, metric_key, run_tags


@dataclass
class ModelContext:
    """What a model factory may need: its config, the seed, the data and where other stages wrote."""

    cfg: EvaluateConfig
    seed: int
    data: SplitData
    features_dir: Path | None = None
    models_dir: Path | None = None
    _text: np.ndarray | None = field(default=None, repr=False)

    def item_text_vectors(self) -> np.ndarray:
        """(items, d) language-model vectors of item text from the featurize stage."""
        if self._text is None:
            if self.features_dir is None:
                raise RecloopError("this model needs item text vectors: give the featurize output "
                                   "(paths.features) or remove it from evaluate.models")
            from components.features.featurize import load_item_text

            self._text = load_item_text(self.features_dir, self.data.n_items)
        return self._text


def _popular(ctx: ModelContext) -> Recommender:
    return MostPopular()


def _itemknn(ctx: ModelContext) -> Recommender:
    return ItemKNN(neighbours=ctx.cfg.itemknn.neighbours)


def _als(ctx: ModelContext) -> Recommender:
    return ImplicitALS(**ctx.cfg.als.model_dump(), seed=ctx.seed)


def _bpr(ctx: ModelContext) -> Recommender:
    return ImplicitBPR(**ctx.cfg.bpr.model_dump(), seed=ctx.seed)


def _content(ctx: ModelContext) -> Recommender:
    return ContentKNN(ctx.item_text_vectors(), history_items=ctx.cfg.content.history_items)


def _recloop(ctx: ModelContext) -> Recommender:
    from components.models.scoring import load_finetuned_scorer

    return load_finetuned_scorer(ctx.models_dir)  # the finetune stage's model; `fit` checks the catalog


MODELS: dict[str, Callable[[ModelContext], Recommender]] = {
    "popular": _popular,
    "itemknn": _itemknn,
    "als": _als,
    "bpr": _bpr,
    "content": _content,
    "recloop": _recloop,
}


@dataclass
class EvaluationSummary:
    models: list[str]
    stages: list[str]
    users: int
    items: int
    # {model: {metric: value}} on the headline stage.
    headline: dict[str, dict[str, float]]
    stage: str
    k: int
    fit_seconds: dict[str, float]
    seconds: float
    outputs: dict[str, str]
    mlflow_run_id: str | None = None

    def describe(self) -> str:
        lines = [f"evaluate: {len(self.models)} models on {', '.join(self.stages)} "
                 f"({self.users:,} users x {self.items:,} items, full ranking) in {self.seconds:.1f}s"]
        k = self.k
        for model in self.models:
            m = self.headline[model]
            lines.append(f"  {model:<10} {self.stage} HR@{k} {m[f'hr@{k}']:.4f}  NDCG@{k} {m[f'ndcg@{k}']:.4f}  "
                         f"MRR {m['mrr']:.4f}  coverage@{k} {m[f'coverage@{k}']:.3f}  "
                         f"(fit {self.fit_seconds[model]:.1f}s)")
        lines.append(f"  report {self.outputs['report']}, metrics {self.outputs['metrics']}, "
                     f"charts {self.outputs['assets']}")
        if self.mlflow_run_id:
            lines.append(f"  MLflow run {self.mlflow_run_id}")
        return "\n".join(lines)


def sample_users(data: SplitData, stages: list[str], max_users: int | None, seed: int) -> np.ndarray | None:
    """A seeded sample of the users with a target in an evaluated stage; None means everyone."""
    if max_users is None:
        return None
    users = np.unique(np.concatenate([data.targets(s)["user_idx"].to_numpy() for s in stages]))
    if len(users) <= max_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def log_to_mlflow(tracking_uri: str, experiment: str, cfg: EvaluateConfig, results: dict[str, dict[str, RankingResult]],
                  fit_seconds: dict[str, float], report_dir: Path, outputs: dict[str, Path]) -> str:
    """One parent run for the call, one nested run per model with its metrics; the report as artifacts."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment)
    provenance = run_tags()
    now = int(time.time() * 1000)
    parent = client.create_run(experiment_id, run_name="evaluate", tags=provenance)
    flat_cfg = {k: v for k, v in cfg.model_dump(mode="json").items() if not isinstance(v, dict)}
    client.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in flat_cfg.items()])
    for model, metrics in metrics_tree(results).items():
        if model == "slice_sizes":
            continue
        child = client.create_run(experiment_id, run_name=model,
                                  tags={**provenance, "mlflow.parentRunId": parent.info.run_id, "model": model})
        section = getattr(cfg, model, None)
        params = [Param("model", model)] + ([Param(k, str(v)) for k, v in section.model_dump().items()]
                                            if hasattr(section, "model_dump") else [])
        values = [Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()]
        values.append(Metric("fit_seconds", fit_seconds[model], now, 0))
        for start in range(0, len(values), 500):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(child.info.run_id, metrics=values[start:start + 500],
                             params=params if start == 0 else [], tags=[RunTag("stage", headline_stage(results))])
        client.set_terminated(child.info.run_id)
    client.log_artifact(parent.info.run_id, str(outputs["report"]))
    client.log_artifact(parent.info.run_id, str(outputs["metrics"]))
    client.log_artifacts(parent.info.run_id, str(outputs["assets"]), artifact_path="evaluation")
    client.log_artifacts(parent.info.run_id, str(report_dir / "plots"), artifact_path="plots")
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id


def evaluate(cfg: EvaluateConfig, split_dir: Path, features_dir: Path | None, report_dir: Path, *,
             seed: int = 42, models_dir: Path | None = None, tracking_uri: str | None = None,
             progress: bool = True) -> EvaluationSummary:
    """Fit every model in `cfg.models` on train, evaluate it on `cfg.stages`, write the report and metrics.

    Item text vectors (features_dir/item_text.npy), when present, feed the content model and the
    intra-list diversity metric. `tracking_uri` (e.g. sqlite:///mlflow.db) logs the run to MLflow.
    """
    start = time.perf_counter()
    unknown = [m for m in cfg.models if m not in MODELS]
    if unknown:
        raise RecloopError(f"evaluate.models names unknown model(s) {', '.join(unknown)}; "
                           f"known: {', '.join(MODELS)}")
    if not cfg.models:
        raise RecloopError("evaluate.models is empty: name at least one model, e.g. [popular]")
    data = SplitData.load(split_dir)
    ctx = ModelContext(cfg, seed, data, Path(features_dir) if features_dir else None, models_dir)
    has_text = ctx.features_dir is not None and (ctx.features_dir / "item_text.npy").exists()
    embeddings = ctx.item_text_vectors() if has_text else None
    users = sample_users(data, list(cfg.stages), cfg.max_users, seed)

    results: dict[str, dict[str, RankingResult]] = {}
    fit_seconds: dict[str, float] = {}
    topk: dict = {}
    for name in cfg.models:
        model = MODELS[name](ctx)
        began = time.perf_counter()
        model.fit(data)
        fit_seconds[name] = time.perf_counter() - began
        results[name] = {}
        for stage in cfg.stages:
            result = evaluate_ranking(model, data, stage, tuple(cfg.ks), users=users, chunk_size=cfg.chunk_users,
                                      head_share=cfg.head_share, cold_user_max_history=cfg.cold_user_max_history,
                                      item_embeddings=embeddings, progress=progress)
            results[name][stage] = result
            if cfg.write_topk:
                topk[f"{name}-{stage}"] = result.topk_frame(data)

    context = {"users": data.n_users, "items": data.n_items, "train": len(data.train),
               "head_share": cfg.head_share, "cold_user_max_history": cfg.cold_user_max_history}
    outputs = write_report(results, fit_seconds, context, report_dir, topk)
    run_id = (log_to_mlflow(tracking_uri, cfg.experiment, cfg, results, fit_seconds, Path(report_dir), outputs)
              if tracking_uri else None)
    lead = headline_stage(results)
    return EvaluationSummary(models=list(cfg.models), stages=list(cfg.stages), users=data.n_users,
                             items=data.n_items, headline={m: r[lead].metrics for m, r in results.items()},
                             stage=lead, k=min(cfg.ks), fit_seconds=fit_seconds,
                             seconds=time.perf_counter() - start,
                             outputs={k: str(v) for k, v in outputs.items()}, mlflow_run_id=run_id)
