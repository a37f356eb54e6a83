"""The stage table (components/stages.py) and dvc.yaml as the flows read it (flows/dvcfile.py) agree."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from checkouts import REPO

from components.config import load_params
from components.errors import RecloopError
from components.stages import STAGES
from flows.dvcfile import load_stages, plan


def _stages(overrides: tuple[str, ...] = ()):
    return load_stages(load_params(REPO / "params.yaml", overrides), REPO / "dvc.yaml")


def test_dvc_yaml_and_the_stage_table_hold_the_same_stages_in_the_same_order():
    declared = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert [s.name for s in _stages()] == declared == list(STAGES)


def test_each_stage_names_its_library_function():
    from components.data.ingest import ingest
    from components.training.finetune import finetune

    assert STAGES["ingest"].library is ingest and STAGES["finetune"].library is finetune
    assert all(callable(stage.library) for stage in STAGES.values())


def test_stage_paths_come_from_params():
    by_name = {s.name: s for s in _stages(("paths.split=elsewhere/split",))}
    assert by_name["split"].outs == ("elsewhere/split",)
    assert by_name["featurize"].deps[0] == "elsewhere/split/items.parquet"
    assert "elsewhere/split" in by_name["pretrain"].deps


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


def test_a_dvc_stage_missing_from_the_stage_table_is_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared["train"] = {"cmd": "recloop train", "deps": ["data/split"], "outs": ["models"]}
    with pytest.raises(RecloopError, match="stages missing from components/stages.py STAGES: train"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, declared))


def test_a_stage_command_other_than_its_cli_door_is_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared["split"]["cmd"] = "recloop split --set split.max_history=10"
    with pytest.raises(RecloopError, match="must be exactly `recloop split`"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, declared))


def test_stages_listed_before_their_inputs_are_an_error(tmp_path):
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    reordered = {"split": declared.pop("split"), **declared}
    with pytest.raises(RecloopError, match="lists stage split before validate"):
        load_stages(load_params(REPO / "params.yaml"), _dvc_file(tmp_path, reordered))
