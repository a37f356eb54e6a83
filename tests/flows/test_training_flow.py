"""The training flow on a 6-user MovieLens slice, run through DVC: dvc.lock records it, DVC skips what is unchanged."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import yaml
from checkouts import TARGET, copy_checkout, dvc, file_stamps, lock_entries, set_params
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from components.errors import RecloopError
from flows.training import training_pipeline

OUTPUT_FOLDERS = ["data/canonical", "data/validated", "data/split", "data/features", "models", "reports"]
STAGES = ["ingest", "validate", "split", "featurize", "pretrain", "finetune"]


def _rerun(first_run):
    with contextlib.chdir(first_run.repo):
        return {o.stage: o for o in training_pipeline(target=TARGET)}


def test_first_run_runs_every_stage_and_dvc_lock_records_it(first_run):
    assert [o.stage for o in first_run.outcomes] == STAGES
    assert not any(o.skipped for o in first_run.outcomes)
    lock = lock_entries(first_run.repo)
    for o in first_run.outcomes:
        assert o.outputs == {out["path"]: out["md5"] for out in lock[o.stage]["outs"]}
    split = {o.stage: o for o in first_run.outcomes}["split"]
    assert "data/split" in split.outputs and "reports/split.json" in split.outputs
    # The flow left exactly what `dvc repro` would: DVC finds nothing to do.
    status = dvc(first_run.repo, "status", "--with-deps", "--json", TARGET)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {}
    written = yaml.safe_load((first_run.repo / "params.yaml").read_text())
    assert lock["split"]["params"]["params.yaml"]["split"] == written["split"]


def test_an_unchanged_rerun_skips_every_stage_and_writes_nothing(first_run):
    before = file_stamps(first_run.repo, OUTPUT_FOLDERS)
    outcomes = _rerun(first_run)
    assert all(o.skipped for o in outcomes.values())
    assert file_stamps(first_run.repo, OUTPUT_FOLDERS) == before
    assert {s: o.outputs for s, o in outcomes.items()} == {o.stage: o.outputs for o in first_run.outcomes}


def test_a_params_change_reruns_its_stage_and_downstream_only_where_inputs_changed(first_run):
    # No user of the slice has 1,000 ratings: split runs again and writes the same tables, so featurize,
    # whose input is the split's items table, and training are unchanged for DVC. (The copy keeps the
    # new value: dvc.lock now records it.)
    set_params(first_run.repo, {"split.max_history": 1000})
    outcomes = _rerun(first_run)
    assert {s for s, o in outcomes.items() if not o.skipped} == {"split"}
    first = {o.stage: o.outputs for o in first_run.outcomes}
    assert outcomes["split"].outputs["data/split"] == first["split"]["data/split"]
    assert lock_entries(first_run.repo)["split"]["params"]["params.yaml"]["split"]["max_history"] == 1000


def test_outputs_changed_behind_the_flow_are_rebuilt(first_run):
    shutil.rmtree(first_run.repo / "data/features")
    outcomes = _rerun(first_run)
    assert {s for s, o in outcomes.items() if not o.skipped} == {"featurize"}
    first = {o.stage: o.outputs for o in first_run.outcomes}
    assert outcomes["featurize"].outputs == first["featurize"]
    assert all(o.skipped for o in _rerun(first_run).values())


def test_metrics_and_report_links_are_published_as_artifacts(first_run):
    with get_client(sync_client=True) as client:
        def latest(key):
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return max(found, key=lambda a: a.created).data

        rows = json.loads(latest("training-metrics"))  # a table artifact's data is its rows as JSON
        reports = latest("training-reports")
    assert {"stage", "metric", "value"} <= set(rows[0])
    assert {r["stage"] for r in rows} >= {"ingest", "validate", "split"}
    assert "reports/validation.html" in reports and "featurize" in reports


def test_set_overrides_are_refused_since_dvc_reads_params_yaml_alone(first_run):
    with contextlib.chdir(first_run.repo), pytest.raises(RecloopError, match="--set seed=7: .*dvc exp run -S"):
        training_pipeline(overrides=["seed=7"], target=TARGET)


def test_bad_input_fails_at_once_without_retries(prefect_api, tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    set_params(repo, {"ingest.path": "data/raw/missing", "orchestrate.retry_delay_seconds": 0})
    with contextlib.chdir(repo):
        state = training_pipeline(target="ingest", return_state=True)
    assert state.is_failed()
    with pytest.raises(RecloopError, match="data/raw/missing"):
        state.result()
    with get_client(sync_client=True) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        (ingest,) = client.read_task_runs(flow_run_filter=this_run)
    # ingest is a transient stage (retries: 2), but a missing input is the user's to fix: one attempt.
    assert (ingest.name, ingest.run_count) == ("ingest", 1)


def test_a_user_error_inside_the_stage_is_not_retried(prefect_api, tmp_path):
    # The source folder exists but holds no MovieLens files: `recloop ingest` exits with 2.
    repo = copy_checkout(tmp_path / "repo")
    (repo / "data/raw/empty").mkdir(parents=True)
    (repo / "data/raw/empty/README").write_text("nothing here\n")
    set_params(repo, {"ingest.path": "data/raw/empty", "orchestrate.retry_delay_seconds": 0})
    with contextlib.chdir(repo):
        state = training_pipeline(target="ingest", return_state=True)
    with pytest.raises(RecloopError, match="`recloop ingest` stopped on the error above"):
        state.result()
    with get_client(sync_client=True) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        (ingest,) = client.read_task_runs(flow_run_filter=this_run)
    assert ingest.run_count == 1
