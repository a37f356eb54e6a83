"""The gate: a challenger replaces the champion only when it is better on what is new and has not
forgotten what was old.

Both models are scored by the evaluator (full ranking, seen items filtered) on the same catalog:
the new window's held-out latest interactions, prequentially (every one a target ranked from its
user's earlier history, up to `max_window_targets` of them, so that a few hits do not decide), and
the guard set (the original test split), a forgetting check. The gain's standard error (a paired
bootstrap over users) is reported beside it. The decision and its numbers go to MLflow (params,
metrics, tags) and to `reports/continual/<run>.json` and `.md`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.atomic import write_text
from components.config import ContinualConfig, TrackingConfig
from components.data.dataset import SplitData
from components.evaluation.evaluator import evaluate_ranking
from components.evaluation.prequential import bootstrap_se, prequential_split, score
from components.evaluation.protocol import Recommender
from components.tracking import create_run

METRIC = "ndcg@10"


@dataclass
class GateDecision:
    """Champion and challenger NDCG@10 on the new window and the guard set, and the verdict."""

    promote: bool
    reasons: list[str]
    window: dict[str, float]  # {"champion": .., "challenger": .., "targets": .., "users": .., "gain_se": ..}
    guard: dict[str, float]
    min_gain: float
    max_forgetting: float
    run: str = ""
    extra: dict = field(default_factory=dict)
    # Off-policy estimates from the feedback log ({"metric": .., "champion": .., "challenger": ..}), if any.
    ope: dict = field(default_factory=dict)

    @property
    def gain(self) -> float:
        return self.window["challenger"] - self.window["champion"]

    @property
    def forgetting(self) -> float:
        return self.guard["champion"] - self.guard["challenger"]

    def to_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain, "forgetting": self.forgetting}

    def describe(self) -> str:
        head = "PROMOTE" if self.promote else "REFUSE"
        return (f"gate: {head} (new window {METRIC}: champion {self.window['champion']:.4f} vs challenger "
                f"{self.window['challenger']:.4f}; guard: {self.guard['champion']:.4f} vs "
                f"{self.guard['challenger']:.4f})\n" + "\n".join(f"  - {r}" for r in self.reasons))


def decide(window: dict[str, float], guard: dict[str, float], cfg: ContinualConfig,
           ope: dict | None = None) -> GateDecision:
    """Promote when the gain on the new window beats `min_gain` and `min_gain_se` of its standard errors
    (when measured), and the guard loss stays within `max_forgetting` (absolute NDCG@10); with
    `cfg.ope_gate`, also when the challenger's off-policy estimate `ope["challenger"]` is not below the
    champion's `ope["champion"]` (no estimate: refused). The reasons say which test passed or failed
    and by how much.
    """
    gain = window["challenger"] - window["champion"]
    loss = guard["champion"] - guard["challenger"]
    se = window.get("gain_se")
    required = cfg.min_gain if se is None else max(cfg.min_gain, cfg.min_gain_se * se)
    better = gain > required
    kept = loss <= cfg.max_forgetting
    noise = "" if se is None else f" ± {se:.4f}"
    within = "" if se is None or not cfg.min_gain_se else f", {cfg.min_gain_se:g} standard error(s) at least"
    reasons = [
        (f"new window: {'+' if gain >= 0 else ''}{gain:.4f}{noise} {METRIC} "
         f"({'more' if better else 'not more'} than the required gain {required:.4g}{within})"),
        (f"guard set: {'-' if loss >= 0 else '+'}{abs(loss):.4f} {METRIC} "
         f"({'within' if kept else 'beyond'} the forgetting tolerance {cfg.max_forgetting:g})"),
    ]
    promote = better and kept
    if cfg.ope_gate:
        if not ope:
            promote = False
            reasons.append("off-policy: continual.ope_gate asks for an estimate from the feedback log and none was "
                           "given (run `recloop ope`)")
        else:
            held = ope["challenger"] >= ope["champion"]
            promote = promote and held
            reasons.append(f"off-policy {ope.get('metric', 'value')}: challenger {ope['challenger']:.4f} vs champion "
                           f"{ope['champion']:.4f} ({'not below' if held else 'below'} the champion's)")
    elif ope:
        reasons.append(f"off-policy {ope.get('metric', 'value')} (not gated): challenger {ope['challenger']:.4f} vs "
                       f"champion {ope['champion']:.4f}")
    return GateDecision(promote, reasons, window, guard, cfg.min_gain, cfg.max_forgetting, ope=dict(ope or {}))


def ndcg(model: Recommender, data: SplitData, users: np.ndarray | None = None) -> tuple[float, int]:
    """NDCG@10 of `model` on `data`'s test targets (optionally of `users` only) and how many targets."""
    result = evaluate_ranking(model, data, "test", ks=(10,), users=users, progress=False)
    return result.metrics[METRIC], int(result.metrics["targets"])


def compare(champion: Recommender, challenger: Recommender, window: SplitData, guard: SplitData,
            cfg: ContinualConfig, guard_users: np.ndarray | None = None, seed: int = 0,
            ope: dict | None = None) -> GateDecision:
    """Score both (already fitted) models on the window's held-out `test` (prequentially) and on the
    guard set, then `decide` (with the off-policy estimates `ope`, see there).
    """
    split = prequential_split(window, cfg.max_window_targets, seed)
    a, b = score(champion, split, seed=seed), score(challenger, split, seed=seed)
    scores = {"window": {"champion": a.ndcg, "challenger": b.ndcg, "targets": float(a.targets),
                         "users": float(a.users),
                         "gain_se": bootstrap_se(b.per_target - a.per_target, split.user_of, seed=seed)}}
    (a_guard, n), (b_guard, _) = ndcg(champion, guard, guard_users), ndcg(challenger, guard, guard_users)
    scores["guard"] = {"champion": a_guard, "challenger": b_guard, "targets": float(n)}
    return decide(scores["window"], scores["guard"], cfg, ope)


def record(decision: GateDecision, report_dir: Path, tracking: TrackingConfig | None, experiment: str,
           params: dict | None = None) -> Path:
    """Write `<report_dir>/<run>.json` and `.md` atomically; log params, metrics and tags to MLflow."""
    report_dir = Path(report_dir)
    body = {**decision.to_dict(), "params": params or {}}
    md = (f"# Continual run {decision.run}\n\n**{'Promoted' if decision.promote else 'Refused'}**\n\n"
          f"| set | targets | champion {METRIC} | challenger {METRIC} |\n|---|---|---|---|\n"
          + "".join(f"| {name} | {int(s['targets'])} | {s['champion']:.4f} | {s['challenger']:.4f} |\n"
                    for name, s in (("new window", decision.window), ("guard", decision.guard)))
          + "\n" + "".join(f"- {r}\n" for r in decision.reasons))
    for suffix, text in ((".json", json.dumps(body, indent=2, default=str) + "\n"), (".md", md)):
        write_text(report_dir / f"{decision.run}{suffix}", text)
    if tracking is not None and tracking.uri:
        _log_mlflow(decision, tracking.uri, experiment, params or {})
    return report_dir / f"{decision.run}.json"


def _log_mlflow(decision: GateDecision, uri: str, experiment: str, params: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = create_run(client, experiment, f"gate-{decision.run}",
                     tags={"recloop.stage": "continual", "gate.decision": "promote" if decision.promote
                           else "refuse", "gate.reasons": " | ".join(decision.reasons)})
    run_id = run.info.run_id
    for key, value in {**params, "min_gain": decision.min_gain, "max_forgetting": decision.max_forgetting}.items():
        client.log_param(run_id, key, str(value)[:500])
    metrics = {f"window_{k}": v for k, v in decision.window.items()} | {f"guard_{k}": v for k, v in decision.guard.items()}
    metrics |= {f"ope_{k}": v for k, v in decision.ope.items() if isinstance(v, int | float)}
    for key, value in {**metrics, "gain": decision.gain, "forgetting": decision.forgetting}.items():
        client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id)
