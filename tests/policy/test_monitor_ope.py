"""The off-policy estimate in a monitoring run: a real feedback log of served epsilon-greedy lists with
propensities (window 0 of the continual slice) gives the run an off-policy part, the note, and the
dashboard's off-policy panel its point; the logged value is the log's own DCG-weighted clicks."""
import asyncio

import continual_data as c
import numpy as np
import pytest
from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace

from components.config import MonitorConfig, PolicyConfig
from components.monitoring.dashboard import QUALITY_TAB, panels
from components.monitoring.monitor import monitor
from components.monitoring.off_policy import champion_estimator
from components.policy.ope import position_weights
from components.serving.feedback import read_feedback


def test_a_log_with_propensities_puts_the_estimate_on_the_dashboard(tmp_path):
    db = tmp_path / "feedback.db"
    assert c.served_log(db, c.champion()) > 0
    reference, current = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    c.history(c.base()).to_parquet(reference, index=False)
    c.window(0).to_parquet(current, index=False)
    cfg = MonitorConfig(workspace=tmp_path / "workspace", k=5)
    estimator = champion_estimator(PolicyConfig(reward_events=["click"], bootstrap=50), c.base(), c.champion(), 20, 0)
    summary = monitor(cfg, reference, current, tmp_path / "reports", feedback=db, off_policy=estimator)

    (note,) = [n for n in summary.measurements.notes if n.startswith("off-policy click_dcg")]
    # The logged value by hand: DCG-weighted clicks per served list.
    log = read_feedback(db)
    shown = log[log["source"] == "server"]
    clicks = log[log["source"] == "client"][["request_id", "item_id"]].assign(click=1.0)
    slots = shown.merge(clicks, how="left", on=["request_id", "item_id"]).fillna({"click": 0.0})
    weights = position_weights(5, "dcg")[slots["rank"].astype(int).to_numpy() - 1]
    logged = float((weights * slots["click"]).sum() / slots["request_id"].nunique())
    assert f"logged {logged:.4f}" in note

    workspace = Workspace(str(cfg.workspace))
    (project,) = workspace.search_project(cfg.project)
    (panel,) = [p for tab, p in panels(cfg) if tab == QUALITY_TAB and p.title == "Off-policy value per served list"]
    storage = InMemoryDataStorage(str(cfg.workspace))
    points = {}
    for value in panel.values:
        series = asyncio.run(storage.get_data_series(project.id, [SeriesFilter(
            tags=value.tags, metadata=value.metadata, metric=value.metric, metric_labels=value.metric_labels)],
            None, None)).series
        points[value.metric_labels["column"]] = series[0].values[0]
    assert points["ope_logged"] == pytest.approx(logged)
    assert points["ope_low"] <= points["ope_estimate"] <= points["ope_high"]
    assert np.isfinite(points["ope_estimate"])


def test_a_log_without_propensities_has_no_estimate(tmp_path):
    db = tmp_path / "feedback.db"
    c.served_log(db, c.champion())
    log = read_feedback(db).assign(propensity=np.nan)
    estimator = champion_estimator(PolicyConfig(reward_events=["click"]), c.base(), c.champion(), 20, 0)
    assert estimator(log) is None
