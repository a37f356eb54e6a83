"""The local Evidently workspace: one project whose runs are the monitor's snapshots, and its dashboard.

`evidently ui --workspace evidently_workspace` shows the project's panels: drift shares and scores,
unseen users and items, text and prediction drift, served-list quality and, where the feedback log
has propensities, the off-policy value (logged and estimated), one point per run at
the time its current window ends. The panels are rebuilt from params on every run, so that they
always match the columns and components the reports compute.
"""
from __future__ import annotations

from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.sdk.panels import line_plot_panel
from evidently.ui.workspace import Project, Workspace

from components.config import MonitorConfig
from components.monitoring.off_policy import OPE_COLUMNS
from components.monitoring.report import PREDICTION_COLUMNS
from components.monitoring.text import text_columns

DESCRIPTION = "recloop drift monitoring: one run per `recloop monitor` (reference = the champion's training data)"
DRIFT_TAB = "Drift"
QUALITY_TAB = "Quality"


def _values(metric: str, columns: list[str]) -> list[PanelMetric]:
    return [PanelMetric(legend=c, metric=metric, metric_labels={"column": c}) for c in columns]


def panels(cfg: MonitorConfig) -> list[tuple[str, DashboardPanelPlot]]:
    """(tab, panel) pairs: what the dashboard shows over time."""
    at_k = f"@{cfg.k} on served lists"
    return [
        (DRIFT_TAB, line_plot_panel(
            title="Share of drifted interaction columns", size="half",
            description=f"data drift fires at {cfg.drift_share:g}",
            values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})])),
        (DRIFT_TAB, line_plot_panel(title="Current window interactions", size="half",
                                    values=[PanelMetric(legend="interactions", metric="RowCount")])),
        (DRIFT_TAB, line_plot_panel(
            title="Drift score per interaction column",
            description=f"{cfg.cat_method} (categorical, drifts above {cfg.cat_threshold:g}), "
                        f"{cfg.num_method} (numerical, above {cfg.num_threshold:g})",
            values=_values("ValueDrift", list(cfg.columns)))),
        (DRIFT_TAB, line_plot_panel(
            title="Interactions on users and items the reference never saw", size="half",
            values=[PanelMetric(legend="unseen users", metric="MeanValue", metric_labels={"column": "unseen_user"}),
                    PanelMetric(legend="unseen items", metric="MeanValue", metric_labels={"column": "unseen_item"})])),
        (DRIFT_TAB, line_plot_panel(title="Text-embedding drift per principal component", size="half",
                                    values=_values("ValueDrift", text_columns(cfg.text_components)))),
        (DRIFT_TAB, line_plot_panel(title="Prediction drift of served items", size="half",
                                    values=_values("ValueDrift", PREDICTION_COLUMNS))),
        (QUALITY_TAB, line_plot_panel(
            title=f"NDCG, hit rate and MRR {at_k}", size="half",
            values=[PanelMetric(legend=legend, metric=metric, metric_labels={"column": "value"})
                    for legend, metric in (("NDCG", "NDCG"), ("hit rate", "HitRate"), ("MRR", "MRR"))])),
        (QUALITY_TAB, line_plot_panel(
            title=f"Novelty, popularity bias and diversity {at_k}", size="half",
            values=[PanelMetric(legend="novelty", metric="Novelty"),
                    PanelMetric(legend="popularity bias (ARP)", metric="PopularityBiasMetric"),
                    PanelMetric(legend="diversity", metric="Diversity")])),
        (QUALITY_TAB, line_plot_panel(
            title="Off-policy value per served list", size="half",
            description="from feedback with propensities: the served policy's logged value and the champion's "
                        "SNIPS estimate under policy.target (first reward event, DCG-weighted)",
            values=[PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": column})
                    for column, legend in OPE_COLUMNS.items()])),
    ]


def open_project(workspace: Path, cfg: MonitorConfig) -> tuple[Workspace, Project]:
    """The workspace (created if missing) and its monitoring project, with the dashboard rebuilt."""
    Path(workspace).mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    found = ws.search_project(cfg.project)
    project = found[0] if found else ws.create_project(cfg.project, DESCRIPTION)
    tabs: dict[str, list[DashboardPanelPlot]] = {}
    for tab, panel in panels(cfg):
        tabs.setdefault(tab, []).append(panel)
    # The whole model in one write: evidently 0.7.23's add_panel lists a panel twice in an existing tab.
    ws.save_dashboard(project.id, DashboardModel(
        tabs=[DashboardTabModel(title=tab, panels=[p.id for p in plots]) for tab, plots in tabs.items()],
        panels=[p for plots in tabs.values() for p in plots]))
    return ws, project


def add_run(workspace: Path, cfg: MonitorConfig, snapshot: Snapshot) -> str:
    """Add the run's snapshot to the project; returns the snapshot id."""
    ws, project = open_project(workspace, cfg)
    return str(ws.add_run(project.id, snapshot).id)
