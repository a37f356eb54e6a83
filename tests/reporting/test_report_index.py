"""The reports index, built from a reports folder that real stage writers filled (a monitor run on
MovieLens windows, a gate decision), and from an empty one, where every part says how to make it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from components.config import MonitorConfig, Params
from components.continual.gate import GateDecision, record
from components.continual.retrain import CONTINUAL_DIR
from components.evaluation.report import ASSETS_DIR, METRICS_FILE, REPORT_FILE
from components.monitoring.monitor import LATEST_FILE, monitor
from components.reporting import index
from components.validation.project import GX_DIR, SITE
from components.validation.report import HTML_FILE

RATINGS = Path(__file__).resolve().parents[2] / "data/raw/ml-latest-small/ratings.csv"


def _years(first: int, last: int, folder: Path) -> Path:
    raw = pd.read_csv(RATINGS)
    year = pd.to_datetime(raw["timestamp"], unit="s").dt.year
    raw = raw[(year >= first) & (year <= last)]
    path = folder / f"{first}-{last}.parquet"
    pd.DataFrame({"user_id": raw["userId"].astype(str), "item_id": raw["movieId"].astype(str),
                  "timestamp": raw["timestamp"].astype("int64"), "event": "rate",
                  "value": raw["rating"].astype("float64"), "domain": "movies"}).to_parquet(path)
    return path


def _params(tmp_path: Path) -> Params:
    return Params.model_validate({"paths": {"reports": str(tmp_path / "reports")},
                                  "monitor": {"workspace": str(tmp_path / "evidently_workspace")}})


def _links(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', page)


def test_the_names_match_what_the_stages_write() -> None:
    assert (index.VALIDATION_FILE, index.EVALUATION_FILE, index.EVALUATION_ASSETS, index.METRICS_FILE,
            index.LATEST_VERDICT, index.CONTINUAL_DIR) == (HTML_FILE, REPORT_FILE, ASSETS_DIR, METRICS_FILE,
                                                          LATEST_FILE, CONTINUAL_DIR)
    assert index.GX_DATA_DOCS == GX_DIR / "uncommitted" / "data_docs" / SITE / "index.html"


def test_an_empty_reports_folder_lists_what_to_run(tmp_path: Path) -> None:
    summary = index.write_index(_params(tmp_path), gx_docs=tmp_path / "gx/index.html")
    page = summary.path.read_text()
    assert summary.path == tmp_path / "reports" / "index.html"
    for command in ("dvc repro validate", "dvc repro finetune", "dvc repro evaluate", "recloop monitor",
                    "recloop retrain"):
        assert f"not run yet: <code>{command}</code>" in page
    assert len(summary.missing) == 7 and summary.present == ["Tools"]
    assert f"evidently ui --workspace {tmp_path / 'evidently_workspace'}" in page
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in page and "prefect server start" in page


@pytest.mark.slow
def test_the_index_links_every_report_that_exists(tmp_path: Path) -> None:
    params = _params(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / HTML_FILE).write_text("<html>validation</html>")
    gx_docs = tmp_path / "gx/uncommitted/data_docs/local_site/index.html"
    gx_docs.parent.mkdir(parents=True)
    gx_docs.write_text("<html>data docs</html>")
    pd.DataFrame({"epoch": [0, 1, 2, 3], "train_loss": [None, 7.1, 6.8, 6.7],
                  "valid_ndcg@10": [0.010, 0.031, 0.042, 0.040]}).to_csv(reports / "finetune_history.csv", index=False)
    (reports / REPORT_FILE).write_text("# Evaluation\n")
    (reports / ASSETS_DIR).mkdir()
    (reports / ASSETS_DIR / "metric_vs_k.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (reports / METRICS_FILE).write_text(json.dumps({"recloop": {"ndcg@10": 0.0412, "hr@10": 0.081},
                                                    "popular": {"ndcg@10": 0.0213, "hr@10": 0.043}}))
    drift = monitor(MonitorConfig(workspace=params.monitor.workspace), _years(1996, 2000, tmp_path),
                    _years(2015, 2018, tmp_path), reports / "monitoring")
    gate = GateDecision(False, ["new window: challenger 0.0500 does not beat the champion 0.0520 by more than 0"],
                        {"champion": 0.052, "challenger": 0.050, "targets": 900}, {"champion": 0.041,
                                                                                    "challenger": 0.040,
                                                                                    "targets": 500},
                        0.0, 0.01, run="20261204T101500")
    record(gate, reports / CONTINUAL_DIR, None, "unused")

    summary = index.write_index(params, gx_docs=gx_docs)
    page = summary.path.read_text()
    assert summary.missing == ["pretrain history: dvc repro pretrain"]
    links = _links(page)
    for link in links:
        assert (reports / link).resolve().exists(), link
    assert {"validation.html", "../gx/uncommitted/data_docs/local_site/index.html", "finetune_history.csv",
            "evaluation.md", "evaluation/metric_vs_k.png", f"monitoring/{Path(drift.report).name}",
            f"{CONTINUAL_DIR}/20261204T101500.md"} <= set(links)
    # The verdict and its reasons, the gate's decision, the headline numbers and the history's best epoch.
    assert "DRIFT: retrain" in page and all(r.replace("'", "&#x27;") in page for r in drift.verdict.reasons)
    assert "refused" in page and "0.0520 &rarr; 0.0500" in page
    assert "<td>recloop</td><td>0.0412</td><td>0.0810</td>" in page
    assert "best valid_ndcg@10 0.0420 at epoch 2 of 3" in page and "<polyline" in page
