"""pipelines/foundation/dvc.yaml: complete code deps and params, and out of `dvc repro`'s way (make run)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_pipeline import _code_deps, _covered, import_closure, unlisted_sections

from components.stages import FOUNDATION_STAGES, STAGES

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "pipelines/foundation/dvc.yaml"

sys.path.insert(0, str(Path(__file__).parent / "flows"))
from checkouts import copy_checkout, dvc  # noqa: E402


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / PIPELINE).read_text())["stages"]


def test_the_foundation_pipeline_is_its_stage_table_and_apart_from_the_main_one():
    assert list(_stages()) == list(FOUNDATION_STAGES)
    assert not set(FOUNDATION_STAGES) & set(STAGES)
    for name, spec in _stages().items():
        assert spec["cmd"] == f"recloop {name}"  # the stage table's composition, like every door
        assert spec["wdir"] == "../.."  # from the repository root, with its params.yaml


@pytest.mark.parametrize("name", list(FOUNDATION_STAGES))
def test_foundation_code_deps_cover_what_the_stage_runs(name):
    deps = _code_deps(_stages()[name])
    assert all((REPO / d).exists() for d in deps)
    # The composition registers the foundation too (components/registry/foundation.py).
    needed = import_closure(FOUNDATION_STAGES[name].library.__module__) | import_closure(
        "components.registry.foundation")
    needed = {f for f in needed if (REPO / f).read_text().strip()} | {"components/stages.py"}
    missing = sorted(f for f in needed if not _covered(f, deps))
    assert not missing, f"{PIPELINE} stage {name} runs code it does not list in deps: {', '.join(missing)}"


@pytest.mark.parametrize("name", list(FOUNDATION_STAGES))
def test_foundation_params_cover_the_sections_it_reads(name):
    missing = unlisted_sections(_stages()[name], FOUNDATION_STAGES[name].sections)
    assert not missing, f"{PIPELINE} stage {name} reads params it does not list: {', '.join(missing)}"


def test_dvc_repro_in_a_fresh_checkout_never_pretrains_a_foundation_unless_asked(tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    # Every stage `make run` (`dvc repro`) would run, without running any (forced: nothing is built yet).
    main = dvc(repo, "repro", "--dry", "--force")
    assert main.returncode == 0, main.stderr
    assert "recloop finetune" in main.stdout and "recloop foundation" not in main.stdout

    asked = dvc(repo, "repro", "--dry", "--force", PIPELINE)
    assert asked.returncode == 0, asked.stderr
    assert "recloop foundation" in asked.stdout and "recloop finetune" not in asked.stdout
