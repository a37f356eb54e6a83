"""Two MovieLens slices ingested, validated and split side by side on a local Dask cluster."""
from __future__ import annotations

import contextlib

import pandas as pd
import pytest
from checkouts import SLICE_A, SLICE_B, copy_checkout, set_params

from components.config import load_params
from components.errors import RecloopError
from flows.fanout import prepare_datasets


def test_datasets_are_prepared_in_parallel_on_dask(prefect_api, tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    set_params(repo, {
        "orchestrate.dask_processes": False,  # threads: the cluster starts in a second on 2 cores
        "orchestrate.dask_workers": 2,
        "orchestrate.datasets": [
            {"name": "first-ten", "ingest": {"path": SLICE_A, "domain": "movies-a"}},
            {"name": "next-six", "ingest": {"path": SLICE_B, "domain": "movies-b"},
             "validate": {"min_interactions": 100, "min_users": 5, "min_value": 0.5, "max_value": 5.0}},
        ],
    })
    with contextlib.chdir(repo):
        outcomes = prepare_datasets()

    assert {name: [o.stage for o in runs] for name, runs in outcomes.items()} == {
        "first-ten": ["ingest", "validate", "split"], "next-six": ["ingest", "validate", "split"]}
    users = {}
    for name in outcomes:
        train = pd.read_parquet(repo / "data/datasets" / name / "split/train.parquet")
        users[name] = set(train["user_id"])
        assert set(train["domain"]) == {"movies-a" if name == "first-ten" else "movies-b"}
        assert (repo / "data/datasets" / name / "reports/split.json").exists()
    assert users == {"first-ten": {str(u) for u in range(1, 11)}, "next-six": {str(u) for u in range(11, 17)}}
    # The main pipeline's folders are not touched by the fan-out.
    assert not (repo / "data/canonical").exists()


def test_fanout_without_datasets_says_what_to_do(prefect_api, tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    with contextlib.chdir(repo), pytest.raises(RecloopError, match="orchestrate.datasets is empty"):
        prepare_datasets()


def test_dataset_names_must_be_unique():
    with pytest.raises(RecloopError, match="dataset names must be unique"):
        load_params(None, ["orchestrate.datasets=[{name: a, ingest: {}}, {name: a, ingest: {}}]"])
