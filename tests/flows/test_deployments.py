"""Deployments carry the schedules params give them (built, not served: serving blocks until stopped)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from checkouts import REPO, SLICE_A, set_params, tool_env

from components.errors import RecloopError
from flows.deployments import build_deployments, deploy_to_work_pool


def _params_file(tmp_path, updates):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    set_params(tmp_path, updates)
    return str(tmp_path / "params.yaml")


def test_deployments_carry_cron_and_timezone_from_params(tmp_path):
    path = _params_file(tmp_path, {
        "orchestrate.timezone": "Europe/Paris",
        "orchestrate.schedules": {"training": "30 1 * * *"},
        "orchestrate.datasets": [{"name": "more", "ingest": {"path": SLICE_A}}],
    })
    deployments = {d.name: d for d in build_deployments(path, ["seed=7"])}
    assert set(deployments) == {"training", "datasets"}
    training = deployments["training"]
    (schedule,) = training.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("30 1 * * *", "Europe/Paris", True)
    assert training.entrypoint == "flows.training.training_pipeline"
    # Runs re-read the params file on the day they run, with the overrides given at deploy time.
    assert training.parameters == {"params_path": path, "overrides": ["seed=7"]}
    assert deployments["datasets"].schedules == []
    assert deployments["datasets"].entrypoint == "flows.fanout.prepare_datasets"


def test_the_datasets_deployment_is_left_out_without_datasets(tmp_path):
    assert [d.name for d in build_deployments(_params_file(tmp_path, {}))] == ["training"]


@pytest.mark.parametrize("updates, message", [
    ({"orchestrate.schedules": {"nightly": "0 2 * * *"}}, "names nightly, which are not deployments"),
    ({"orchestrate.schedules": {"training": "every night"}}, "orchestrate.schedules.training"),
    ({"orchestrate.timezone": "Mars/Olympus"}, "not an IANA zone name"),
])
def test_schedule_mistakes_are_one_clear_error(tmp_path, updates, message):
    with pytest.raises(RecloopError, match=message):
        build_deployments(_params_file(tmp_path, updates))


def test_the_same_deployments_go_onto_a_work_pool(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    path = _params_file(tmp_path, {"orchestrate.schedules": {"training": "15 3 * * *"}})
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
