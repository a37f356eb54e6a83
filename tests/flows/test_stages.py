"""The stage table: read from dvc.yaml, checked against the flows' calls, and the cache key built on it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.config import load_params
from components.errors import RecloopError
from flows.hashes import ABSENT, content_hash
from flows.stage_runs import stage_cache_key
from flows.stages import CALLS, load_stages, plan
from checkouts import REPO


def _stages(overrides: tuple[str, ...] = ()):
    return load_stages(load_params(REPO / "params.yaml", overrides), REPO / "dvc.yaml")


def test_every_dvc_stage_has_its_flow_call_and_no_call_lacks_a_stage():
    declared = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert [s.name for s in _stages()] == declared
    assert set(CALLS) == set(declared)


def test_stage_paths_come_from_params():
    by_name = {s.name: s for s in _stages(("paths.split=elsewhere/split",))}
    assert by_name["split"].outs == ("elsewhere/split",)
    assert by_name["featurize"].deps[0] == "elsewhere/split/items.parquet"
    assert by_name["split"].params == ("seed", "split")


def test_plan_is_the_target_and_what_it_needs():
    stages = _stages()
    assert [s.name for s in plan(stages, "split")] == ["ingest", "validate", "split"]
    assert [s.name for s in plan(stages, "ingest")] == ["ingest"]
    with pytest.raises(RecloopError, match="no stage 'train'"):
        plan(stages, "train")


def _dvc_file(tmp_path: Path, stages: dict) -> Path:
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return path


def test_a_dvc_stage_without_a_flow_call_is_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared["train"] = {"cmd": "recloop train", "deps": ["data/split"], "outs": ["models"]}
    with pytest.raises(RecloopError, match="stages without a call in flows/stages.py CALLS: train"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, declared))


def test_a_stage_command_other_than_its_cli_door_is_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared["split"]["cmd"] = "recloop split --set split.max_history=10"
    with pytest.raises(RecloopError, match="must be exactly that"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, declared))


def test_stages_listed_before_their_inputs_are_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    reordered = {"split": declared.pop("split"), **declared}
    with pytest.raises(RecloopError, match="lists stage split before validate"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, reordered))


def test_cache_key_covers_the_params_the_stage_reads_and_its_inputs_only():
    def key(overrides=(), deps=None):
        split = next(s for s in _stages(overrides) if s.name == "split")
        params = load_params(REPO / "params.yaml", overrides)
        return stage_cache_key(None, {"stage": split, "params": params, "deps": deps or {"data/validated": "h1"}})

    base = key()
    assert key() == base
    assert key(("split.max_history=100",)) != base
    assert key(("seed=7",)) != base
    assert key(deps={"data/validated": "h2"}) != base
    # Knobs of other stages do not invalidate this one.
    assert key(("featurize.batch_size=8",)) == base
    assert key(("validate.min_users=3",)) == base
    # Where it writes is part of what it does.
    assert key(("paths.split=elsewhere",)) != base


def test_content_hash_of_folders_follows_content_not_bytecode(tmp_path):
    folder = tmp_path / "pkg"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "a.py").write_text("x = 1\n")
    before = content_hash(folder)
    (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert content_hash(folder) == before
    (folder / "a.py").write_text("x = 2\n")
    assert content_hash(folder) != before
    assert content_hash(tmp_path / "missing") == ABSENT
