"""Issue 12's reproducible rows: bench/recipes.py's quality recipes must still train what their result files
recorded (a default changed later has to be pinned in the recipe), and bench/pipeline.py reads how a fresh
clone's training stages ended."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipes", REPO / "bench" / "recipes.py")
recipes = importlib.util.module_from_spec(spec)
sys.modules["recipes"] = recipes  # dataclasses look their module up
spec.loader.exec_module(recipes)
from model import recorded_params, run_params  # noqa: E402  (bench/, put on the path by recipes.py)


def trained(recipe, gpu: bool, root: Path) -> dict:
    _, params = run_params(recipe.dataset, root, REPO / "params.yaml", recipes.overrides(recipe, gpu, 42))
    return recorded_params(params)


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_a_recipe_trains_what_its_result_file_recorded(name: str, tmp_path: Path) -> None:
    recipe = recipes.RECIPES[name]
    recorded = json.loads((REPO / "bench" / "results" / "model" / recipe.result).read_text())["params"]
    now = trained(recipe, gpu=False, root=tmp_path)
    assert differences(recorded, now) == {}


def differences(recorded: dict, now: dict, at: str = "") -> dict:
    """Recorded values that `now` changes. Knobs (and loss weights) added after the run are absent from
    its file: their defaults leave the model as it was."""
    found = {}
    for key, value in recorded.items():
        if isinstance(value, dict) and isinstance(now.get(key), dict):
            found |= differences(value, now[key], f"{at}{key}.")
        elif key in now and now[key] != value:
            found[at + key] = (value, now[key])
    return found


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_on_a_gpu_a_recipe_trains_epochs_instead_of_minutes(name: str, tmp_path: Path) -> None:
    recipe = recipes.RECIPES[name]
    cpu, gpu = trained(recipe, False, tmp_path), trained(recipe, True, tmp_path)
    assert cpu["pretrain"]["max_minutes"] and gpu["pretrain"]["max_minutes"] is None
    assert (gpu["pretrain"]["device"], gpu["finetune"]["device"]) == ("cuda", "cuda")
    assert {k: v for k, v in gpu["model"].items()} == cpu["model"]
    assert "--no-curve" in recipes.command(name) and "--no-curve" not in recipes.command(name, gpu=True)


def test_time_to_the_anchor_is_read_off_the_test_curve() -> None:
    curve = [{"stage": "pretrain", "epoch": 1, "seconds": 10.0, "test_ndcg@10": 0.02},
             {"stage": "pretrain", "epoch": 2, "seconds": 21.0, "test_ndcg@10": 0.05},
             {"stage": "finetune", "epoch": 1, "seconds": 30.0, "test_ndcg@10": 0.04}]
    assert recipes.time_to(curve, 0.05) == 21.0
    assert recipes.time_to(curve, 0.06) is None


def test_list_prints_every_recipe_with_its_command() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "recipes.py"), "list"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name, recipe in recipes.RECIPES.items():
        assert f"{name}: target" in done.stdout and f"--dataset {recipe.dataset}" in done.stdout


def test_without_git_a_result_names_the_commit_that_pack_recorded(tmp_path: Path, monkeypatch) -> None:
    import provenance

    monkeypatch.setattr(provenance, "REPO", tmp_path)  # a copy of the tree without .git, as on a lent GPU
    assert provenance.provenance()["git_commit"] == "unknown"
    packed = {"git_commit": "0" * 40, "git_dirty": False, "git_diff_sha256": None, "git_changed": []}
    (tmp_path / ".device").mkdir()
    (tmp_path / ".device" / "provenance.json").write_text(json.dumps(packed))
    assert provenance.provenance() == packed


def test_the_pipeline_benchmark_says_how_each_training_stage_ended(tmp_path: Path) -> None:
    import pipeline

    reports = tmp_path / "reports"
    reports.mkdir()
    base = {"valid_ndcg@10": 0.07, "best_epoch": 18, "epochs": 23, "train_seconds": 204.3}
    (reports / "pretrain.json").write_text(json.dumps({**base, "stopped_early": True, "out_of_time": False}))
    (reports / "finetune.json").write_text(json.dumps({**base, "stopped_early": False, "out_of_time": False}))
    (reports / "metrics.json").write_text(json.dumps({"recloop": {"ndcg@10": 0.08, "hr@10": 0.15, "mrr": 0.05},
                                                      "slice_sizes": {"tail_items": 100}}))
    found = pipeline.summary(tmp_path)
    assert found["stages"]["pretrain"]["ended_by"] == "early stopping"
    assert found["stages"]["finetune"]["ended_by"] == "epoch cap"
    assert found["test"] == {"recloop": {"ndcg@10": 0.08, "hr@10": 0.15}}
