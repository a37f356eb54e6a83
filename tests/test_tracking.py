"""The one tracking helper: metric keys MLflow accepts, experiments created once, provenance tags on every run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.config import TrackingConfig
from components.tracking import (
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    Tracker,
    create_run,
    ensure_experiment,
    metric_key,
    run_tags,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A git work tree with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "params.yaml").write_text("lr: 0.001\n")
    git(repo, "add", "params.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return repo


@pytest.fixture()
def client(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize(("name", "key"), [("valid_ndcg@10", "valid_ndcg_at_10"), ("coverage@10", "coverage_at_10"),
                                           ("slice=tail.ndcg@5", "slice_tail.ndcg_at_5"), ("a b/c-d.e", "a b/c-d.e"),
                                           ("loss(train):x", "loss_train__x")])
def test_metric_keys_keep_what_mlflow_accepts_and_spell_out_at(name, key):
    assert metric_key(name) == key


def test_an_experiment_is_created_once_where_asked(client, tmp_path):
    where = (tmp_path / "artifacts").as_uri()
    first = ensure_experiment(client, "exp", artifact_location=where)
    assert ensure_experiment(client, "exp") == first
    assert client.get_experiment(first).artifact_location == where


def test_run_tags_name_the_commit_whether_the_tree_was_dirty_and_the_dvc_experiment(repo, tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    commit = git(repo, "rev-parse", "HEAD")
    assert run_tags(repo) == {GIT_COMMIT_TAG: commit, GIT_DIRTY_TAG: "false"}
    (repo / "untracked.csv").write_text("an output\n")
    assert run_tags(repo)[GIT_DIRTY_TAG] == "false"  # untracked outputs do not change the code
    (repo / "params.yaml").write_text("lr: 0.01\n")  # what `dvc exp run -S lr=0.01` does to the tree
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-lr")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", commit)
    assert run_tags(repo) == {GIT_COMMIT_TAG: commit, GIT_DIRTY_TAG: "true", "dvc.exp_name": "tiny-lr",
                              "dvc.exp_baseline_rev": commit}
    elsewhere = tmp_path / "elsewhere"  # not in a work tree (an installed package, a container): no git tags
    elsewhere.mkdir()
    assert run_tags(elsewhere) == {"dvc.exp_name": "tiny-lr", "dvc.exp_baseline_rev": commit}


def test_every_run_carries_the_provenance_tags(repo, client, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-lr")
    tracker = Tracker(TrackingConfig(uri=client.tracking_uri, experiment="train"), "finetune")
    tracker.start()
    tracker.log_metrics({"valid_ndcg@10": 0.5}, step=1)
    tracker.finish()
    gate = create_run(client, "gate", "gate-1", tags={"gate.decision": "promote"})
    for run_id in (tracker.run_id, gate.info.run_id):
        tags = client.get_run(run_id).data.tags
        assert tags[GIT_COMMIT_TAG] == git(repo, "rev-parse", "HEAD") and tags["dvc.exp_name"] == "tiny-lr"
    assert client.get_run(gate.info.run_id).data.tags["gate.decision"] == "promote"
    assert client.get_run(tracker.run_id).data.metrics == {"valid_ndcg_at_10": 0.5}
