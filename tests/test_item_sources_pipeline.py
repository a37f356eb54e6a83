"""The item tower's source files are a dependency of training in dvc.yaml, without breaking a fresh clone."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from components.config import load_params

REPO = Path(__file__).resolve().parents[1]


def test_training_stages_depend_on_the_item_sources_folder_which_a_fresh_clone_has():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("pretrain", "finetune"):
        assert "${paths.item_sources}" in stages[name]["deps"], name
    paths = load_params(REPO / "params.yaml", []).paths
    # recloop kg writes inside it by default, so a new graph re-runs training.
    assert paths.kg.parent == paths.item_sources
    # The folder is in git (its README), its data is not: a clone has the dep, and no graph gets committed.
    asked = [str(paths.item_sources / "README.md"), str(paths.kg / "triples.parquet"),
             str(paths.item_sources / "image.parquet")]
    done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(asked),
                          capture_output=True, text=True)
    assert set(done.stdout.split()) == set(asked[1:])
    assert (REPO / paths.item_sources / "README.md").is_file()
