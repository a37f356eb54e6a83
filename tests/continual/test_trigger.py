"""The loop's wiring: the monitor flow emits the drift event on a drifting window, and the retrain
deployment carries the trigger that turns that event into a run with the event's payload."""
from __future__ import annotations

import time

import continual_data as c
import yaml
from prefect import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from flows.continual import DRIFT_EVENT, monitor_flow
from flows.deployments import build_deployments


def _params(tmp_path, **sections) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def test_retrain_deployment_carries_the_drift_trigger(tmp_path):
    path = _params(tmp_path, split={"time": {"cutoff": "2015-01-01"}}, monitor={"project": "movies"},
                   orchestrate={"schedules": {"training": None, "monitor": "0 * * * *"}})
    deployments = {d.name: d for d in build_deployments(path, ["seed=3"])}
    assert {"monitor", "retrain"} <= set(deployments)
    assert [s.schedule.cron for s in deployments["monitor"].schedules] == ["0 * * * *"]
    assert deployments["monitor"].entrypoint == "flows.continual.monitor_flow"
    retrain = deployments["retrain"]
    assert retrain.schedules == [] and retrain.entrypoint == "flows.continual.retrain_flow"
    (trigger,) = retrain.triggers
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {DRIFT_EVENT}
    assert trigger.match.model_dump()["prefect.resource.id"] == "recloop.monitor.movies"
    assert trigger.parameters == {"params_path": path, "overrides": ["seed=3"], "trigger": "{{ event.payload }}"}


def test_without_live_windows_there_is_nothing_to_monitor(tmp_path):
    names = [d.name for d in build_deployments(_params(tmp_path, orchestrate={"schedules": {}}))]
    assert "monitor" not in names and "retrain" not in names


def test_monitor_flow_emits_the_drift_event_on_a_drifting_window(prefect_api, tmp_path):
    reference, current = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    c.base().train.drop(columns=["user_idx", "item_idx"]).to_parquet(reference, index=False)
    c.window(0).to_parquet(current, index=False)
    path = _params(tmp_path, paths={"reports": str(tmp_path / "reports"), "split": str(tmp_path / "split"),
                                    "features": str(tmp_path / "features")},
                   monitor={"workspace": str(tmp_path / "ws"), "min_interactions": 500, "project": "movies"})
    out = monitor_flow(path, [], str(reference), str(current))
    assert out["drift"] and out["reasons"] and out["event_id"]

    # The events worker ships events asynchronously: read them back from the server until ours is there.
    with get_client(sync_client=True) as client:
        for _ in range(30):
            events = client.read_events(EventFilter(event=EventNameFilter(name=[DRIFT_EVENT])), limit=50).events
            if any(str(e.id) == out["event_id"] for e in events):
                break
            time.sleep(1)
    (event,) = [e for e in events if str(e.id) == out["event_id"]]
    assert event.resource.id == "recloop.monitor.movies"
    assert event.payload["reasons"] == out["reasons"]
    assert event.payload["window"]["file"] == str(current) and "data_drift" in event.payload["signals"]
