"""The GX project behind validate: stored suites, a checkpoint per table, Data Docs on each run.

What goes into git (great_expectations.yml, expectations/, validation_definitions/, checkpoints/) must
change only when the rules in suites.py do: never with params, the clock or another run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import great_expectations as gx
import pandas as pd

from components.validation.project import open_project
from components.validation.suites import REQUIRED_COLUMNS, suite_parameters
from components.validation.validate import validate

REPO = Path(__file__).resolve().parents[2]


def _committed(gx_dir: Path) -> dict[str, bytes]:
    """The project's files that git holds: everything but uncommitted/ and GX's empty plugin folders."""
    return {str(p.relative_to(gx_dir)): p.read_bytes() for p in sorted(gx_dir.rglob("*"))
            if p.is_file() and "uncommitted" not in p.relative_to(gx_dir).parts}


def test_validate_runs_the_checkpoints_and_builds_data_docs(ml_slice, write_canonical, cfg, tmp_path):
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    gx_dir = tmp_path / "gx"
    summary = validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", gx_dir)

    assert sorted(p.name for p in (gx_dir / "checkpoints").iterdir()) == ["interactions.json", "items.json",
                                                                          "users.json"]
    docs = Path(summary.data_docs)
    assert docs.name == "index.html" and docs.is_relative_to(gx_dir / "uncommitted" / "data_docs")
    for table in REQUIRED_COLUMNS:
        assert list((docs.parent / "validations" / table).rglob("*.html")), f"no Data Docs page for {table}"
        assert list((gx_dir / "uncommitted" / "validations" / table).rglob("*.json"))
    # Thresholds are suite parameters: the stored rule names them, the run supplies them.
    stored = json.loads((gx_dir / "expectations" / "interactions.json").read_text())
    ranges = [e["kwargs"] for e in stored["expectations"] if e["type"] == "expect_column_values_to_be_between"]
    assert {"$PARAMETER": "max_value"} in [k["max_value"] for k in ranges]


def test_a_gx_user_can_run_a_stored_checkpoint(ml_slice, write_canonical, cfg, tmp_path):
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", tmp_path / "gx")

    context = gx.get_context(mode="file", context_root_dir=tmp_path / "gx")
    users = pd.DataFrame({"user_id": ["1", "2", "2", None]})
    result = context.checkpoints.get("users").run(batch_parameters={"dataframe": users},
                                                  expectation_parameters=suite_parameters(cfg, now=0))
    (run,) = result.run_results.values()
    flagged = {r.expectation_config.meta["reason"]: r.result.get("unexpected_index_list") for r in run.results
               if not r.success}
    assert flagged == {"missing user_id": [3], "duplicate user": [1, 2]}


def test_the_stored_project_does_not_change_with_params_or_runs(ml_slice, write_canonical, cfg, tmp_path):
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    gx_dir = tmp_path / "gx"
    validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", gx_dir)
    first = _committed(gx_dir)
    other = cfg.model_copy(update={"min_value": None, "max_value": None, "max_timestamp": 2_000_000_000})
    validate(other, canonical, tmp_path / "validated", tmp_path / "reports", gx_dir)
    assert _committed(gx_dir) == first


def test_a_stale_stored_suite_is_brought_back_to_the_code(tmp_path):
    gx_dir = tmp_path / "gx"
    open_project(gx_dir)
    path = gx_dir / "expectations" / "items.json"
    fresh = json.loads(path.read_text())
    stale = {**fresh, "expectations": fresh["expectations"][:-1]}
    path.write_text(json.dumps(stale))

    open_project(gx_dir)
    restored = json.loads(path.read_text())
    # The rules kept keep their ids; the one put back is new to the store.
    assert restored["expectations"][:-1] == fresh["expectations"][:-1]
    assert {**restored["expectations"][-1], "id": None} == {**fresh["expectations"][-1], "id": None}


def test_the_committed_project_matches_the_code(tmp_path):
    """If this fails, the rules changed: run `recloop validate` and commit gx/."""
    copy = tmp_path / "gx"
    shutil.copytree(REPO / "gx", copy, ignore=shutil.ignore_patterns("uncommitted"))
    committed = _committed(copy)
    open_project(copy)
    assert _committed(copy) == committed
