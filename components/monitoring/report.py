"""The Evidently side of a monitoring run: reports on each kind of data, merged into one snapshot,
and the numbers the policy reads back out of it.

Parts, each an Evidently `Report` over its own table (merged so that one HTML file and one
workspace run hold the whole check):
  interactions  DataDriftPreset over the window features (a drift test per column and the share
                of drifted columns), RowCount, MeanValue of unseen_user / unseen_item, and
                ValueDrift of each text-embedding component
  predictions   ValueDrift of score, like_prob and rec_popularity of served items (reference vs
                current feedback)
  quality       NDCG, HitRate and MRR at k, Novelty and PopularityBias on served lists (with the
                reference feedback's values beside them when it has outcomes); Diversity of the
                lists' item text when item vectors are given
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Recsys, Report
from evidently.core.report import Snapshot
from evidently.core.serialization import ReportModel, SnapshotModel
from evidently.legacy.renderers.html_widgets import header_text, text_widget
from evidently.metrics import (
    MRR,
    NDCG,
    Diversity,
    HitRate,
    MeanValue,
    Novelty,
    PopularityBiasMetric,
    RowCount,
    ValueDrift,
)
from evidently.presets import DataDriftPreset

from components.config import MonitorConfig
from components.monitoring.window_features import WindowFeatures

PREDICTION_COLUMNS = ["score", "like_prob", "rec_popularity"]
QUALITY_METRICS = {"NDCG": "ndcg", "HitRate": "hit_rate", "MRR": "mrr", "Novelty": "novelty",
                   "PopularityBiasMetric": "popularity_bias", "Diversity": "diversity"}


@dataclass
class ColumnDrift:
    """One column's drift: Evidently's score, the test it used and its verdict."""

    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass
class Measurements:
    """What the policy needs from a run's reports; empty parts were not measured (see `notes`)."""

    columns: dict[str, ColumnDrift] = field(default_factory=dict)
    unseen_users: float | None = None
    unseen_items: float | None = None
    text: dict[str, ColumnDrift] = field(default_factory=dict)
    # Current interactions whose item has a text vector: the text signal's sample size.
    text_rows: int = 0
    predictions: dict[str, ColumnDrift] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    reference_quality: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _drift_results(snapshot: Snapshot) -> dict[str, ColumnDrift]:
    """ValueDrift scores by column, with Evidently's own drift test verdicts."""
    out = snapshot.dict()
    failed = {t["metric_config"]["params"].get("column") for t in out["tests"]
              if t["metric_config"]["params"]["type"].endswith(":ValueDrift") and t["status"] == "FAIL"}
    results = {}
    for metric in out["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            results[config["column"]] = ColumnDrift(float(metric["value"]), config["method"],
                                                    float(config["threshold"]), config["column"] in failed)
    return results


def _usable(reference: pd.Series, current: pd.Series) -> bool:
    # Evidently refuses an all-missing column, and a constant reference has no scale to compare against.
    return reference.notna().sum() >= 2 and current.notna().sum() >= 2 and reference.nunique() >= 2


def interactions_part(features: WindowFeatures, text: tuple[pd.DataFrame, pd.DataFrame] | None,
                      cfg: MonitorConfig, measured: Measurements) -> Snapshot:
    """Data drift of the window features (and text components); fills `measured` in."""
    reference, current = features.reference, features.current
    numerical = list(features.numerical)
    text_columns: list[str] = []
    if text is not None:
        text_columns = [c for c in text[0].columns if _usable(text[0][c], text[1][c])]
        reference = pd.concat([reference, text[0][text_columns]], axis=1)
        current = pd.concat([current, text[1][text_columns]], axis=1)
        numerical += text_columns
        measured.text_rows = int(text[1].notna().all(axis=1).sum())
        if not text_columns:
            measured.notes.append("text drift: too few interactions on items with text vectors")
    columns = [c for c in cfg.columns if c in features.categorical
               or _usable(features.reference[c], features.current[c])]
    if len(columns) < len(cfg.columns):
        skipped = ", ".join(c for c in cfg.columns if c not in columns)
        measured.notes.append(f"data drift: {skipped} left out (constant or missing in a window)")
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=features.categorical)
    metrics = [
        RowCount(tests=[]),
        DataDriftPreset(columns=columns, drift_share=cfg.drift_share, cat_method=cfg.cat_method,
                        num_method=cfg.num_method, cat_threshold=cfg.cat_threshold, num_threshold=cfg.num_threshold),
        MeanValue(column="unseen_user", tests=[]),
        MeanValue(column="unseen_item", tests=[]),
        *[ValueDrift(column=c, method=cfg.num_method, threshold=cfg.num_threshold) for c in text_columns],
    ]
    snapshot = Report(metrics, include_tests=True).run(Dataset.from_pandas(current, data_definition=definition),
                                                       Dataset.from_pandas(reference, data_definition=definition))
    drift = _drift_results(snapshot)
    measured.columns = {c: drift[c] for c in columns}
    measured.text = {c: drift[c] for c in text_columns}
    means = {m["config"].get("column"): float(m["value"]) for m in snapshot.dict()["metrics"]
             if m["config"]["type"].endswith(":MeanValue")}
    measured.unseen_users, measured.unseen_items = means["unseen_user"], means["unseen_item"]
    return snapshot


def predictions_part(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig,
                     measured: Measurements) -> Snapshot | None:
    """Drift of what was served (score, like_prob, rec_popularity); None when no column is comparable."""
    columns = [c for c in PREDICTION_COLUMNS if _usable(reference[c], current[c])]
    if not columns:
        measured.notes.append("prediction drift: no served column with values on both sides")
        return None
    definition = DataDefinition(numerical_columns=columns)
    metrics = [ValueDrift(column=c, method=cfg.num_method, threshold=cfg.num_threshold) for c in columns]
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition))
    measured.predictions = _drift_results(snapshot)
    return snapshot


def _ranking_definition(numerical: list[str]) -> DataDefinition:
    return DataDefinition(numerical_columns=["rank", "target", *numerical], categorical_columns=["item_id"],
                          ranking=[Recsys(user_id="request_id", item_id="item_id", target="target",
                                          prediction="rank", recommendations_type="rank")])


def _at_k(result: object, k: int) -> float:
    """A quality metric's number: the value itself, or for a top-k metric the k-th row of its
    (rank, value) table. Rows are taken by position because in evidently 0.7.23 the `rank` column
    of NDCG and MRR is shifted by one; lists shorter than k give their last row.
    """
    value = getattr(result, "value", result)  # a result object, or the value from `.dict()`
    if isinstance(value, (int, float, np.floating)):
        return float(value)
    column = value["value"]
    values = list(column.values()) if isinstance(column, dict) else column.tolist()
    return float(values[min(k, len(values)) - 1])


def quality_part(current: pd.DataFrame, reference: pd.DataFrame | None, train: pd.DataFrame,
                 text: pd.DataFrame | None, cfg: MonitorConfig, measured: Measurements) -> list[Snapshot]:
    """Recommendation quality of served lists (`ranking_frame` tables); `text` holds per-row item components."""
    definition = _ranking_definition([])
    metrics = [NDCG(k=cfg.k, no_feedback_users=True), HitRate(k=cfg.k, no_feedback_users=True),
               MRR(k=cfg.k, no_feedback_users=True), Novelty(k=cfg.k), PopularityBiasMetric(k=cfg.k)]
    # Evidently groups the training interactions by the ranking's user column, here the request id.
    interactions = train[["user_id", "item_id"]].rename(columns={"user_id": "request_id"})
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current, data_definition=definition),
        None if reference is None else Dataset.from_pandas(reference, data_definition=definition),
        additional_data={"current_train_data": Dataset.from_pandas(
            interactions, data_definition=DataDefinition(categorical_columns=["request_id", "item_id"]))})
    for metric in snapshot.dict()["metrics"]:
        name = QUALITY_METRICS[metric["config"]["type"].rsplit(":", 1)[-1]]
        measured.quality[name] = _at_k(metric["value"], cfg.k)
        if reference is not None:
            ref = snapshot.context.get_reference_metric_result(metric["id"])
            measured.reference_quality[name] = _at_k(ref, cfg.k)
    diversity = None if text is None else _diversity(current, text, cfg, measured)
    return [snapshot] if diversity is None else [snapshot, diversity]


def _diversity(current: pd.DataFrame, text: pd.DataFrame, cfg: MonitorConfig,
               measured: Measurements) -> Snapshot | None:
    """Intra-list diversity: mean cosine distance between the text components of a list's items."""
    columns = list(text.columns)
    lists = pd.concat([current.reset_index(drop=True), text.reset_index(drop=True)], axis=1).dropna(subset=columns)
    if lists.empty:
        measured.notes.append("diversity: no served item has a text vector")
        return None
    # evidently 0.7.23 turns numeric-looking item ids into ints inside Diversity and then misses them.
    lists = lists.assign(item_id="item " + lists["item_id"])
    snapshot = Report([Diversity(k=cfg.k, item_features=columns)]).run(
        Dataset.from_pandas(lists, data_definition=_ranking_definition(columns)), None)
    measured.quality["diversity"] = float(snapshot.dict()["metrics"][0]["value"])
    return snapshot


def merge(parts: list[tuple[str, Snapshot]], name: str, timestamp: datetime,
          metadata: dict[str, str], tags: list[str], verdict: str) -> Snapshot:
    """One snapshot holding every part's results and widgets, each part under a header, and first of
    all recloop's `verdict` (Markdown, Evidently's text widget) so the page says what was decided and why.
    """
    models = [(title, part.to_snapshot_model()) for title, part in parts]
    head = [text_widget(title="recloop verdict", text=verdict)]
    merged = SnapshotModel(
        report=ReportModel(items=[]), name=name, timestamp=timestamp, metadata=metadata, tags=tags,
        metric_results={k: v for _, m in models for k, v in m.metric_results.items()},
        top_level_metrics=[k for _, m in models for k in m.top_level_metrics],
        widgets=[*head, *(w for title, m in models for w in (header_text(label=title), *m.widgets))],
        tests_widgets=[w for _, m in models for w in m.tests_widgets])
    return Snapshot.load_model(merged)
