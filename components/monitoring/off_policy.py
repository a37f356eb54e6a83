"""The off-policy estimate in a monitoring run: from the current window's feedback log, when its served
lists carry propensities (a service that explored), the logged value of the served policy and the
champion's estimated value under `policy.target` (SNIPS with its 95% interval, components/policy/),
beside the served-list quality; one Evidently part (MeanValue of a one-row table) so the dashboard can
plot them over runs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import MeanValue

from components.config import PolicyConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel, load_trained
from components.policy.feedback_ope import has_propensities, ope_compare
from components.serving.feedback import feedback_interactions

# column -> legend on the dashboard
OPE_COLUMNS = {"ope_logged": "logged (served policy)", "ope_estimate": "champion under policy.target (SNIPS)",
               "ope_low": "95% interval, low", "ope_high": "95% interval, high"}
Estimator = Callable[[pd.DataFrame], dict | None]


def champion_estimator(cfg: PolicyConfig, data: SplitData, champion: TrainedModel, candidates: int,
                       seed: int) -> Estimator:
    """A function of a feedback frame: the logged and estimated values of its first reward event,
    DCG-weighted (None when the log has no propensities or nothing to evaluate)."""
    metric = f"{cfg.reward_events[0]}_dcg"

    def estimate(feedback: pd.DataFrame) -> dict | None:
        if not has_propensities(feedback):
            return None
        try:
            result = ope_compare(cfg, feedback, data, champion, feedback_interactions(feedback), candidates, seed)
        except RecloopError:  # no served list of a known user: nothing to show this run
            return None
        snips = result.challenger[metric].estimates["snips"]
        return {"metric": metric, "ope_logged": result.champion[metric].value, "ope_estimate": snips.value,
                "ope_low": snips.low, "ope_high": snips.high, "lists": result.requests,
                "ess": result.challenger[metric].ess}

    return estimate


def default_estimator(cfg: PolicyConfig, split: Path, model: Path, candidates: int, seed: int) -> Estimator:
    """`champion_estimator` for the pipeline's split and model folder, read only when a log has
    propensities (None where either folder is missing)."""

    def estimate(feedback: pd.DataFrame) -> dict | None:
        if not (has_propensities(feedback) and Path(split).exists() and Path(model).exists()):
            return None
        return champion_estimator(cfg, SplitData.load(split), load_trained(model), candidates, seed)(feedback)

    return estimate


def off_policy_part(estimate: dict) -> Snapshot:
    """The estimate as an Evidently part: a MeanValue per OPE_COLUMNS over a one-row table."""
    frame = pd.DataFrame([{c: float(estimate[c]) for c in OPE_COLUMNS}])
    return Report([MeanValue(column=c, tests=[]) for c in OPE_COLUMNS]).run(
        Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(OPE_COLUMNS))), None)
