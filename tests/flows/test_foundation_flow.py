"""The foundation flow on the session's Prefect server: two catalogs prepared side by side on Dask, then a
tiny foundation pretrained through DVC and registered, in a fresh copy of the checkout."""
from __future__ import annotations

import contextlib

import pytest
import yaml
from checkouts import SLICE_B, copy_checkout, lock_entries, set_params

from components.config import RegistryConfig
from components.errors import RecloopError
from components.models.foundation import load_foundation
from components.registry.foundation import foundation_folder
from flows.foundation import foundation_pipeline

# Slice B twice under two domain tokens: two catalogs for the price of one text-encoder run.
VALIDATE = {"min_interactions": 100, "min_users": 5, "min_value": 0.5, "max_value": 5.0}
DATASETS = [{"name": name, "ingest": {"path": SLICE_B, "domain": domain}, "validate": VALIDATE}
            for name, domain in (("shop-a", "movies-a"), ("shop-b", "movies-b"))]


def test_sources_are_prepared_in_parallel_then_the_foundation_is_pretrained_and_registered(
        prefect_api, tmp_path, embedding_cache):
    repo = copy_checkout(tmp_path / "repo")
    registry = f"sqlite:///{repo / 'mlflow.db'}"
    set_params(repo, {
        "orchestrate.dask_processes": False, "orchestrate.dask_workers": 2, "orchestrate.datasets": DATASETS,
        "featurize.cache_dir": str(embedding_cache),
        "foundation.sources": [{"split": f"data/datasets/{d['name']}/split",
                                "features": f"data/datasets/{d['name']}/features"} for d in DATASETS],
        "foundation.registered_model": "recloop-foundation", "registry.uri": registry, "tracking.uri": None,
        "model.dim": 16, "model.layers": 1, "model.max_len": 10, "model.text_hidden": 32,
        "pretrain.epochs": 2, "pretrain.threads": 1,
    })
    with contextlib.chdir(repo):
        outcomes = foundation_pipeline()

    assert {name: [o.stage for o in runs] for name, runs in outcomes.items()} == {
        "shop-a": ["ingest", "validate", "split", "featurize"], "shop-b": ["ingest", "validate", "split", "featurize"],
        "foundation": ["foundation"]}
    (ran,) = outcomes["foundation"]
    assert not ran.skipped and "models/foundation" in ran.outputs and ran.outputs["models/foundation"]
    lock = yaml.safe_load((repo / "pipelines/foundation/dvc.lock").read_text())["stages"]
    assert "foundation" in lock and "foundation" not in lock_entries(repo)  # apart from the main pipeline's record
    found = load_foundation(repo / "models/foundation")
    assert [s["domain"] for s in found.sources] == ["movies-a", "movies-b"]  # each source its domain token
    back = load_foundation(foundation_folder(RegistryConfig(uri=registry), "models:/recloop-foundation/latest",
                                             tmp_path / "fetched"))
    assert back.vocab == found.vocab

    with contextlib.chdir(repo):
        again = foundation_pipeline(prepare=False)
    assert again["foundation"][0].skipped  # nothing it reads changed: DVC skips it


def test_foundation_flow_without_sources_says_what_to_do(prefect_api, tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    with contextlib.chdir(repo), pytest.raises(RecloopError, match="foundation.sources is empty"):
        foundation_pipeline()
