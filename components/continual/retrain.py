"""The retrain stage (`recloop retrain`, the retrain flow): champion + newest window -> challenger -> gate
-> registry (challenger; champion on a pass) -> the service reloads.

The champion is the registry's `champion` bundle, or `models/finetuned` with the split while the
registry has none. The service's feedback log, where there is one, gives the gate an off-policy
estimate of both models (when `continual.ope_gate` asks for it or the log has propensities) and the
policy objectives (`continual.objective` policy or mixed) their served lists and rewards. The window
step itself (grow, hold out, fine-tune, gate) is `components.continual.window_step`, shared with
`simulate`. What the run made stays under `<paths.models>/continual/<run>/` (model, split, features),
so the registered bundle and the report can always be traced back to it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import Params
from components.continual.gate import GateDecision, record
from components.continual.window_step import challenge, open_window
from components.data.dataset import PARTS, SplitData
from components.data.schema import ITEMS_FILE
from components.errors import RecloopError
from components.features.text import cached_text
from components.models.artifacts import FINETUNED_DIR, TrainedModel, load_trained, save_trained

log = logging.getLogger(__name__)
CONTINUAL_DIR = "continual"


@dataclass
class RetrainSummary:
    run: str
    source: str  # where the champion came from
    window: str
    interactions: int
    new_items: int
    decision: GateDecision
    version: int | None
    reloaded: str
    report: Path
    seconds: float

    def describe(self) -> str:
        registered = f"registered as version {self.version}" if self.version is not None else "not registered"
        return (f"retrain {self.run}: champion from {self.source}, window {self.window} ({self.interactions:,} "
                f"interactions, {self.new_items} new items), {self.seconds:.0f}s\n{self.decision.describe()}\n"
                f"  challenger {registered}; {self.reloaded}\n  wrote {self.report}")


def _champion(params: Params, work: Path) -> tuple[TrainedModel, pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """The champion model, its catalog, its users and every interaction it knows."""
    from components.registry.registry import CHAMPION, alias_version, using_store

    version = alias_version(params.registry, CHAMPION)
    if version is not None:
        import mlflow

        from components.serving.bundle import find_bundle, load_bundle

        with using_store(params.registry):
            local = mlflow.artifacts.download_artifacts(f"models:/{params.registry.model_name}@{CHAMPION}",
                                                        dst_path=str(work / "champion"))
        bundle = load_bundle(find_bundle(local))
        items = bundle.items.drop(columns=["popularity"], errors="ignore")
        return bundle.trained, items, bundle.users, bundle.histories, f"registry version {version}"
    data = SplitData.load(params.paths.split)
    trained = load_trained(Path(params.paths.models) / FINETUNED_DIR)
    histories = pd.concat([getattr(data, p) for p in PARTS], ignore_index=True).drop(columns=["user_idx", "item_idx"])
    return trained, data.items, data.users, histories, "models/finetuned (the registry has no champion)"


def _catalog(params: Params) -> pd.DataFrame | None:
    """Descriptions of items the champion never saw: the validated (or canonical) items table."""
    for folder in (params.paths.validated, params.paths.canonical):
        if (Path(folder) / ITEMS_FILE).exists():
            return pd.read_parquet(Path(folder) / ITEMS_FILE)
    return None


def _write_split(data: SplitData, text: np.ndarray, folder: Path) -> tuple[Path, Path]:
    split, features = folder / "split", folder / "features"
    split.mkdir(parents=True, exist_ok=True)
    features.mkdir(parents=True, exist_ok=True)
    for name in (*PARTS, "items", "users"):
        getattr(data, name).drop(columns=["user_idx", "item_idx"], errors="ignore").to_parquet(
            split / f"{name}.parquet", index=False)
    np.save(features / "item_text.npy", text.astype(np.float32))
    return split, features


def _feedback(params: Params) -> pd.DataFrame | None:
    """The service's feedback log (`serve.feedback_store` or `serve.feedback_log`), or None where there is none."""
    from components.serving.feedback import read_feedback, store_location

    location = store_location(params.serve)
    try:
        return read_feedback(location)
    except RecloopError as e:
        log.info("no feedback log for the off-policy estimate or the policy objective: %s", e)
        return None


def _policy_inputs(params: Params, data: SplitData) -> tuple[pd.DataFrame | None, Callable | None]:
    """From the feedback log: the served lists with their rewards (for continual.objective policy or
    mixed), and the gate's off-policy estimate of (champion, challenger) when continual.ope_gate asks
    for it or the log has propensities (else None: the gate says, where ope_gate is on, that it has none)."""
    from components.policy.feedback_ope import gate_estimates, has_propensities, rewarded_lists
    from components.serving.feedback import feedback_interactions

    cfg = params.continual
    feedback = _feedback(params)
    if feedback is None:
        if cfg.objective != "supervised":
            raise RecloopError(f"continual.objective={cfg.objective} learns from the feedback log's served lists, and "
                               f"there is no log at {params.serve.feedback_store or params.serve.feedback_log}")
        return None, None
    logged = rewarded_lists(feedback, params.policy.reward_events) if cfg.objective != "supervised" else None
    if not (cfg.ope_gate or has_propensities(feedback)):
        return logged, None
    extra = feedback_interactions(feedback)

    def estimate(champion: TrainedModel, challenger: TrainedModel) -> dict | None:
        try:
            return gate_estimates(params.policy, feedback, data, champion, challenger, extra,
                                  params.serve.candidates, params.seed)
        except RecloopError as e:  # e.g. no logged list of a user the window knows: the gate says it has none
            log.warning("no off-policy estimate from the feedback log: %s", e)
            return None

    return logged, estimate


def reload_service(url: str | None, token_env: str) -> str:
    """POST <url>/reload with the bearer token from `token_env`; returns what happened, in words."""
    if not url:
        return "no continual.serve_url: service reload skipped"
    token = os.environ.get(token_env)
    if not token:
        return f"{token_env} is unset: service reload skipped"
    request = urllib.request.Request(f"{url.rstrip('/')}/reload", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return f"service reloaded: {response.read().decode()[:200]}"
    except OSError as e:  # the model is promoted either way; the next reload or restart picks it up
        log.warning("reload of %s failed: %s", url, e)
        return f"service reload at {url} failed ({e})"


def retrain(params: Params, window: Path | None = None, trigger: dict | None = None) -> RetrainSummary:
    """Continual fine-tune of the champion on `window` (default: the newest live window), gate, register.

    `trigger` (the drift event's payload, when a deployment trigger started the run) is logged with the decision.
    """
    from components.monitoring.monitor import latest_live_window
    from components.registry.registry import promote
    from components.serving.bundle import build_bundle
    from components.serving.package import log_bundle

    start = time.perf_counter()
    cfg = params.continual
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work = Path(params.paths.models) / CONTINUAL_DIR / run
    if window is None:
        try:
            window = latest_live_window(params.paths.split)
        except RecloopError:
            raise RecloopError(f"no live windows in {Path(params.paths.split) / 'live'}: set split.time.cutoff and "
                               "run `recloop split`, or pass --window FILE") from None
    window = Path(window)
    if not window.exists():
        raise RecloopError(f"window {window} does not exist: run `recloop split` with split.time.cutoff set")
    rows = pd.read_parquet(window)
    if rows.empty:
        raise RecloopError(f"window {window} holds no interactions: nothing to retrain on")
    champion, items, users, history, source = _champion(params, work)
    keys = ["user_id", "item_id", "timestamp"]
    # A champion packaged after this window was split off may already hold some of its rows.
    marked = history[keys].merge(rows[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    history = history[(marked["_merge"] == "left_only").to_numpy()]
    f = params.featurize
    opened = open_window(champion, items, _catalog(params), history, rows.drop(columns=["split"], errors="ignore"),
                         users, cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir), cfg.holdout_share)
    data, text = opened.data, opened.text
    logged, ope = _policy_inputs(params, data)
    challenged = challenge(champion, opened, SplitData.load(params.paths.split), cfg, params.finetune, params.seed,
                           since=int(rows["timestamp"].min()), labels=params.labels, logged=logged, ope=ope)
    challenger, result, decision = challenged.challenger, challenged.training, challenged.decision
    decision.run = run
    decision.extra = {"window": str(window), "source": source, "trigger": trigger or {},
                      "train_seconds": round(result.seconds, 1), "epochs": result.epochs}

    save_trained(challenger, work / "model", {**result.best_metrics, "continual_run": run})
    split_dir, features_dir = _write_split(data, text, work)
    bundle = build_bundle(work / "model", split_dir, features_dir, work)
    try:
        version = log_bundle(params.registry, bundle, metrics={"window_ndcg_at_10": decision.window["challenger"],
                                                                "guard_ndcg_at_10": decision.guard["challenger"]},
                             tags={"continual_run": run, "gate": "pass" if decision.promote else "refused"})
    finally:
        shutil.rmtree(bundle.parent, ignore_errors=True)
    reloaded = "not promoted: the champion stays"
    if decision.promote:
        promote(params.registry, version)
        reloaded = reload_service(cfg.serve_url, params.serve.reload_token_env)
    report = record(decision, Path(params.paths.reports) / CONTINUAL_DIR, params.tracking, cfg.experiment,
                    {"window": str(window), "source": source, "version": version, "lr_scale": cfg.lr_scale,
                     "replay_ratio": cfg.replay_ratio, "epochs": cfg.epochs, "objective": cfg.objective,
                     "ope_gate": cfg.ope_gate, "ope_policy": decision.ope.get("policy", "none"),
                     "trigger": json.dumps(trigger or {}, default=str)[:400]})
    return RetrainSummary(run, source, str(window), len(rows), opened.new_items, decision,
                          version, reloaded, report, time.perf_counter() - start)
