"""The evaluate stage end to end on real data: files a person and DVC read, MLflow runs, the CLI door."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from components.cli import cli
from components.config import EvaluateConfig
from components.data.dataset import PARTS, SplitData
from components.data.schema import ITEMS_FILE, USERS_FILE, atomic_write_parquet
from components.errors import RecloopError
from components.evaluation.evaluate import MODELS, evaluate
from components.features.featurize import TEXT_VECTORS_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def stage_dirs(tmp_path: Path, movielens: SplitData, item_text: np.ndarray) -> tuple[Path, Path]:
    """The split and featurize outputs as those stages write them."""
    split_dir, features_dir = tmp_path / "split", tmp_path / "features"
    for part in PARTS:
        frame = getattr(movielens, part).drop(columns=["user_idx", "item_idx"])
        atomic_write_parquet(frame, split_dir / f"{part}.parquet")
    atomic_write_parquet(movielens.items, split_dir / ITEMS_FILE)
    atomic_write_parquet(movielens.users, split_dir / USERS_FILE)
    features_dir.mkdir()
    np.save(features_dir / TEXT_VECTORS_FILE, item_text)
    return split_dir, features_dir


def test_stage_writes_metrics_plots_report_and_topk(stage_dirs, tmp_path):
    split_dir, features_dir = stage_dirs
    cfg = EvaluateConfig(models=["popular", "itemknn", "content"], ks=[5, 10], write_topk=True, max_users=120)
    summary = evaluate(cfg, split_dir, features_dir, tmp_path / "reports", seed=1, progress=False)
    reports = tmp_path / "reports"

    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"popular", "itemknn", "content", "slice_sizes"}
    assert metrics["slice_sizes"]["test"]["all"] == 120  # the seeded user sample
    for name in ("popular", "itemknn", "content"):
        m = metrics[name]
        assert 0 <= m["ndcg@5"] <= m["hr@5"] <= m["hr@10"] <= 1
        assert {"valid/ndcg@10", "tail_items/ndcg@10", "coverage@10", "novelty@10", "ild@10"} <= set(m)
    assert metrics["itemknn"]["ndcg@10"] > metrics["popular"]["ndcg@10"]
    assert metrics["content"]["long_tail_share@10"] > metrics["popular"]["long_tail_share@10"]

    curves = pd.read_csv(reports / "plots" / "metric_vs_k.csv")
    assert set(curves["model"]) == {"popular", "itemknn", "content"}
    assert (curves.groupby("model")["hr"].apply(lambda s: s.is_monotonic_increasing)).all()
    by_pop = pd.read_csv(reports / "plots" / "by_popularity.csv", keep_default_na=False)
    assert by_pop.groupby("model")["targets"].sum().eq(120).all()

    text = (reports / "evaluation.md").read_text()
    assert "| itemknn |" in text and "## Slices" in text and "whole catalog" in text
    for chart in ("metric_vs_k", "by_popularity", "slices", "accuracy_vs_tail"):
        assert f"evaluation/{chart}.png" in text
        assert (reports / "evaluation" / f"{chart}.png").read_bytes()[:8] == PNG_MAGIC
    topk = pd.read_parquet(reports / "evaluation" / "topk" / "content-test.parquet")
    assert topk["user_id"].nunique() == 120 and topk["rank"].max() == 10
    assert "content" in summary.describe() and summary.mlflow_run_id is None


def test_cli_runs_the_stage_and_logs_nested_mlflow_runs(stage_dirs, tmp_path, monkeypatch):
    split_dir, features_dir = stage_dirs
    monkeypatch.chdir(tmp_path)  # MLflow keeps run artifacts beside the working directory
    params = {"paths": {"split": str(split_dir), "features": str(features_dir), "reports": str(tmp_path / "r")},
              "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
              "evaluate": {"models": ["popular", "als"], "stages": ["test"], "als": {"iterations": 5}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, ["evaluate", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "als" in result.output and "MLflow run" in result.output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(params["tracking"]["uri"])
    experiment = client.get_experiment_by_name("recloop-evaluate")
    runs = client.search_runs([experiment.experiment_id])
    children = {r.data.tags["mlflow.runName"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(children) == {"popular", "als"}
    written = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert children["als"].data.metrics["ndcg_at_10"] == pytest.approx(written["als"]["ndcg@10"])
    assert children["als"].data.params["iterations"] == "5"
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"evaluation.md", "metrics.json", "evaluation", "plots"} <= artifacts


def test_unknown_model_names_and_missing_inputs_are_user_errors(stage_dirs, tmp_path):
    split_dir, _ = stage_dirs
    with pytest.raises(RecloopError, match="unknown model.*known: popular"):
        evaluate(EvaluateConfig(models=["popular", "sasrecc"]), split_dir, None, tmp_path / "r")
    with pytest.raises(RecloopError, match="item text vectors"):
        evaluate(EvaluateConfig(models=["content"]), split_dir, None, tmp_path / "r")
    with pytest.raises(RecloopError, match="recloop split"):
        evaluate(EvaluateConfig(models=["popular"]), tmp_path / "nowhere", None, tmp_path / "r")
    result = CliRunner().invoke(cli, ["evaluate", "--set", "evaluate.ks=[0]"])
    assert result.exit_code == 2 and "evaluate.ks" in result.output


def test_a_new_model_joins_through_the_registry(stage_dirs, tmp_path, monkeypatch, fixed_scores):
    split_dir, _ = stage_dirs
    data = SplitData.load(split_dir)
    flat = np.zeros((data.n_users, data.n_items), np.float32)
    monkeypatch.setitem(MODELS, "constant", lambda ctx: fixed_scores(flat, name="constant"))
    summary = evaluate(EvaluateConfig(models=["constant", "popular"], stages=["test"], ks=[50]), split_dir, None,
                       tmp_path / "r", progress=False)
    # All scores tied: exactly the expected HR@50 of a random order, 50 / (the user's candidate items),
    # a certain hit for a user with fewer than 50 candidates left (one here has 351 of the 400 films in their history).
    seen = np.asarray(data.seen_matrix(data.history("test")).sum(axis=1)).ravel()
    chance = float(np.mean(np.minimum(1.0, 50 / (data.n_items - seen[data.test["user_idx"]]))))
    assert summary.headline["constant"]["hr@50"] == pytest.approx(chance, rel=1e-6)
    assert summary.headline["popular"]["hr@50"] > chance
