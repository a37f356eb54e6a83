"""Deployments carry the schedules params give them (built, not served: serving blocks until stopped)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from checkouts import REPO, SLICE_A, set_params, tool_env

from components.errors import RecloopError
from flows.deployments import build_deployments, deploy_to_work_pool, plan_deployments


def _params_file(tmp_path, updates, monkeypatch):
    """A params.yaml in a folder that becomes the working directory, as `recloop deploy` runs in a checkout."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    set_params(tmp_path, updates)
    monkeypatch.chdir(tmp_path)
    return "params.yaml"


def test_deployments_carry_cron_and_timezone_from_params(tmp_path, monkeypatch):
    path = _params_file(tmp_path, {
        "orchestrate.timezone": "Europe/Paris",
        "orchestrate.schedules": {"training": "30 1 * * *", "monitor": "0 * * * *"},
        "orchestrate.datasets": [{"name": "more", "ingest": {"path": SLICE_A}}],
    }, monkeypatch)
    deployments = {d.name: d for d in build_deployments(path)}
    assert set(deployments) == {"training", "datasets", "monitor", "retrain"}
    training = deployments["training"]
    (schedule,) = training.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("30 1 * * *", "Europe/Paris", True)
    assert training.entrypoint == "flows.training.training_pipeline"
    # Runs re-read the params file on the day they run.
    assert training.parameters == {"params_path": path, "overrides": []}
    assert deployments["datasets"].schedules == []
    assert deployments["datasets"].entrypoint == "flows.fanout.prepare_datasets"
    assert [t.expect for t in deployments["retrain"].triggers] == [{"recloop.drift.detected"}]


def test_the_repository_params_serve_the_whole_loop(tmp_path, monkeypatch):
    planned = plan_deployments(_params_file(tmp_path, {}, monkeypatch))
    assert planned.served == {"training": "0 2 * * *", "monitor": "0 * * * *", "retrain": None}
    text = planned.describe()
    assert "deployment retrain: served, on demand and on each drift event" in text
    assert "deployment datasets: skipped, no datasets to prepare: list them in orchestrate.datasets" in text


def test_left_out_deployments_are_named_with_the_param_that_enables_them(tmp_path, monkeypatch):
    planned = plan_deployments(_params_file(tmp_path, {"split.time.cutoff": None}, monkeypatch))
    assert planned.served == {"training": "0 2 * * *"}
    assert set(planned.skipped) == {"datasets", "monitor", "retrain"}
    text = planned.describe()
    assert "deployment training: served, schedule `0 2 * * *` (UTC)" in text
    for name in ("monitor", "retrain"):
        assert f"deployment {name}: skipped, no live windows to watch: set split.time.cutoff" in text
    assert [d.name for d in build_deployments("params.yaml")] == ["training"]


def test_set_overrides_reach_every_deployment_but_training_which_runs_through_dvc(tmp_path, monkeypatch):
    path = _params_file(tmp_path, {"split.time.cutoff": None}, monkeypatch)
    planned = plan_deployments(path, ["split.time.cutoff=2015-01-01"])
    assert set(planned.served) == {"monitor", "retrain"}
    assert "--set split.time.cutoff=2015-01-01: the training pipeline runs through DVC" in planned.skipped["training"]


@pytest.mark.parametrize("updates, message", [
    ({"orchestrate.schedules": {"nightly": "0 2 * * *"}}, "names nightly, which are not deployments"),
    ({"orchestrate.schedules": {"training": "every night"}}, "orchestrate.schedules.training"),
    ({"orchestrate.timezone": "Mars/Olympus"}, "not an IANA zone name"),
])
def test_schedule_mistakes_are_one_clear_error(tmp_path, monkeypatch, updates, message):
    with pytest.raises(RecloopError, match=message):
        build_deployments(_params_file(tmp_path, updates, monkeypatch))


def test_the_same_deployments_go_onto_a_work_pool(prefect_api, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    path = _params_file(tmp_path, {"orchestrate.schedules": {"training": "15 3 * * *"}, "split.time.cutoff": None},
                        monkeypatch)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="recloop-test", type="process"), overwrite=True)
        (deployment_id,) = deploy_to_work_pool("recloop-test", params_path=path)
        deployment = client.read_deployment(deployment_id)
    assert (deployment.work_pool_name, deployment.entrypoint) == ("recloop-test", "flows.training.training_pipeline")
    assert [s.schedule.cron for s in deployment.schedules] == ["15 3 * * *"]
    # A process worker runs the flows in this checkout, where params.yaml and dvc.yaml are.
    assert deployment.job_variables == {"working_dir": str(Path.cwd())}


def test_recloop_deploy_without_a_server_is_one_clear_error(tmp_path):
    # A subprocess with a time limit: were the check missing, `recloop deploy` would serve forever.
    env = {**tool_env(), "PREFECT_API_URL": ""}  # also hides one a Prefect profile may set
    done = subprocess.run(["recloop", "deploy", "--params", str(REPO / "params.yaml")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert "error: deployments need a running Prefect server" in done.stderr
    # What it would have served is said first.
    assert "deployment monitor: served" in done.stdout
    assert "deployment datasets: skipped, no datasets to prepare" in done.stdout
    # DVC reads the params.yaml of the folder it runs in, not the one given.
    assert f"deployment training: skipped, --params {REPO / 'params.yaml'}: the training pipeline runs through DVC" \
        in done.stdout
