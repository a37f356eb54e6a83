"""Deployments carry the schedules params give them (built, not served: serving blocks until stopped)."""
from __future__ import annotations

import pytest
from checkouts import REPO, SLICE_A, set_params

from components.errors import RecloopError
from flows.deployments import build_deployments


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
