"""The training flow on a 6-user MovieLens slice: a first run, cache hits, reruns of what changed only."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest
from checkouts import TARGET, copy_checkout, file_stamps, set_params
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from components.errors import RecloopError

from flows.hashes import content_hashes
from flows.training import training_pipeline

OUTPUT_FOLDERS = ["data/canonical", "data/validated", "data/split", "data/features", "models", "reports"]


def _rerun(first_run, overrides=()):
    with contextlib.chdir(first_run.repo):
        return {o.stage: o for o in training_pipeline(overrides=list(overrides), target=TARGET)}


def test_first_run_runs_every_stage_and_returns_its_output_hashes(first_run):
    assert [o.stage for o in first_run.outcomes] == ["ingest", "validate", "split", "featurize", "pretrain",
                                                     "finetune"]
    assert not any(o.cached for o in first_run.outcomes)
    with contextlib.chdir(first_run.repo):
        for o in first_run.outcomes:
            assert o.outputs == content_hashes(list(o.outputs))
    split = {o.stage: o for o in first_run.outcomes}["split"]
    assert "data/split" in split.outputs and "reports/split.json" in split.outputs


def test_an_unchanged_rerun_skips_every_stage_and_writes_nothing(first_run):
    before = file_stamps(first_run.repo, OUTPUT_FOLDERS)
    outcomes = _rerun(first_run)
    assert all(o.cached for o in outcomes.values())
    assert file_stamps(first_run.repo, OUTPUT_FOLDERS) == before
    assert {s: o.outputs for s, o in outcomes.items()} == {o.stage: o.outputs for o in first_run.outcomes}


def test_a_params_change_reruns_its_stage_and_downstream_only_where_inputs_changed(first_run):
    # No user of the slice has 1,000 ratings: split runs again, writes the same tables, so featurize,
    # whose input is the split's items table, is still a cache hit.
    outcomes = _rerun(first_run, ["split.max_history=1000"])
    assert {s for s, o in outcomes.items() if not o.cached} == {"split"}
    first = {o.stage: o.outputs for o in first_run.outcomes}
    assert outcomes["split"].outputs["data/split"] == first["split"]["data/split"]


def test_outputs_changed_behind_the_flow_are_rebuilt(first_run):
    shutil.rmtree(first_run.repo / "data/features")
    outcomes = _rerun(first_run)
    assert {s for s, o in outcomes.items() if not o.cached} == {"featurize"}
    first = {o.stage: o.outputs for o in first_run.outcomes}
    assert outcomes["featurize"].outputs == first["featurize"]
    # The refreshed record now matches the disk again: the next run is all cache hits.
    assert all(o.cached for o in _rerun(first_run).values())


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


def test_bad_input_fails_at_once_without_retries(prefect_api, tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    set_params(repo, {"ingest.path": "data/raw/missing", "orchestrate.retry_delay_seconds": 0})
    with contextlib.chdir(repo):
        state = training_pipeline(target="ingest", return_state=True)
    assert state.is_failed()
    with pytest.raises(RecloopError):
        state.result()
    with get_client(sync_client=True) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        (ingest,) = client.read_task_runs(flow_run_filter=this_run)
    # ingest is a transient stage (retries: 2), but a RecloopError is the user's to fix: one attempt.
    assert (ingest.name, ingest.run_count) == ("ingest", 1)
