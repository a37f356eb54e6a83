"""Flows run against the session's Prefect server (`prefect_api`, tests/conftest.py), in copies of the
checkout set to small MovieLens slices."""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkouts import TARGET, copy_checkout, set_params, slice_params


@dataclass
class FirstRun:
    repo: Path
    outcomes: list  # the StageOutcome list of the first flow run
    snapshot: Path  # data/, models/ and dvc.lock as that run left them, for comparing with `dvc repro`


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session")
def first_run(prefect_api, tmp_path_factory, embedding_cache) -> FirstRun:
    """The training flow run once, up to TARGET, in a fresh copy of the checkout."""
    from flows.training import training_pipeline

    repo = copy_checkout(tmp_path_factory.mktemp("flow-repo"))
    set_params(repo, slice_params(embedding_cache))
    with contextlib.chdir(repo):
        outcomes = training_pipeline(target=TARGET)
    snapshot = tmp_path_factory.mktemp("flow-snapshot")
    shutil.copytree(repo / "data", snapshot / "data", ignore=shutil.ignore_patterns("raw"))
    shutil.copytree(repo / "models", snapshot / "models")
    shutil.copy2(repo / "dvc.lock", snapshot / "dvc.lock")
    return FirstRun(repo, outcomes, snapshot)
