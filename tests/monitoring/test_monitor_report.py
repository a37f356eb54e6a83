"""What a run leaves behind: the HTML report, the verdict JSON, and a workspace run whose
dashboard panels have points to draw (read back the way `evidently ui` reads them)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace

from components.config import MonitorConfig
from components.monitoring.dashboard import DRIFT_TAB, PREDICTION_COLUMNS, QUALITY_TAB, panels
from components.monitoring.monitor import LATEST_FILE, MonitorSummary
from components.monitoring.policy import TRIGGERS_FILE


def test_the_html_report_and_the_verdict_are_written(shift: tuple[MonitorConfig, Path, MonitorSummary]) -> None:
    _, folder, summary = shift
    html = Path(summary.report).read_text()
    assert Path(summary.report).parent == folder / "reports"
    for header in ("Data drift: interactions of the current window vs the reference", "item_popularity",
                   "text_pc1", "Share of Drifted Columns"):
        assert header in html
    # recloop's own verdict heads the Evidently page: the decision and each reason, not only latest.json.
    assert "recloop verdict" in html and "DRIFT: retrain" in html
    for reason in summary.verdict.reasons:
        assert json.dumps(reason)[1:-1] in html
    saved = json.loads(Path(summary.verdict_file).read_text())
    assert saved["verdict"]["drift"] is True and saved["verdict"]["reasons"] == summary.verdict.reasons
    assert saved["verdict"]["current"]["end"] == summary.verdict.current.end
    latest = json.loads((folder / "reports" / LATEST_FILE).read_text())
    assert latest == json.loads((folder / "reports" / f"{latest['run']}.json").read_text())
    triggers = json.loads((folder / "reports" / TRIGGERS_FILE).read_text())
    assert triggers[0]["run"] == summary.run and triggers[0]["window_end_ts"] == summary.verdict.current.end_ts


def test_the_workspace_run_feeds_the_dashboard(shift: tuple[MonitorConfig, Path, MonitorSummary]) -> None:
    cfg, _, summary = shift
    workspace = Workspace(str(cfg.workspace))
    (project,) = workspace.search_project(cfg.project)
    assert summary.snapshot_id in {str(r) for r in workspace.list_runs(project.id)}
    dashboard = project.dashboard.model()
    expected = panels(cfg)
    assert [p.title for p in dashboard.panels] == [p.title for _, p in expected]
    assert [t.title for t in dashboard.tabs] == [DRIFT_TAB, QUALITY_TAB]
    for tab in dashboard.tabs:
        titles = [p.title for p in dashboard.panels if p.id in tab.panels]
        assert titles == [p.title for t, p in expected if t == tab.title]
        assert len(set(tab.panels)) == len(tab.panels)
    storage = InMemoryDataStorage(str(cfg.workspace))
    for tab, panel in expected:
        for value in panel.values:
            series = asyncio.run(storage.get_data_series(project.id, [SeriesFilter(
                tags=value.tags, metadata=value.metadata, metric=value.metric, metric_labels=value.metric_labels)],
                None, None)).series
            # This run had no feedback: served-item panels stay empty, every other one has its point.
            served = tab == QUALITY_TAB or value.metric_labels.get("column") in PREDICTION_COLUMNS
            assert bool(series) != served, (panel.title, value.legend)
            if series:
                assert all(v is not None for v in series[0].values)
