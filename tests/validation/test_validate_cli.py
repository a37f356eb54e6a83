"""`recloop validate`: the CLI door to the same stage, on a small slice of MovieLens."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from components.cli import cli

PARAMS = """\
validate:
  min_value: 0.5
  max_value: 5.0
  min_timestamp: 788918400
  min_interactions: 100
  min_users: 5
"""


def _invoke(tmp_path: Path, *overrides: str):
    (tmp_path / "params.yaml").write_text(PARAMS)
    args = ["validate", "--params", str(tmp_path / "params.yaml"),
            "--set", f"paths.canonical={tmp_path / 'canonical'}",
            "--set", f"paths.validated={tmp_path / 'validated'}",
            "--set", f"paths.reports={tmp_path / 'reports'}"]
    for override in overrides:
        args += ["--set", override]
    return CliRunner().invoke(cli, args)


def test_cli_validates_and_prints_the_summary(ml_slice, write_canonical, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the GX project is gx/ in the working directory
    ml_slice["interactions"].iloc[[3, 4], ml_slice["interactions"].columns.get_loc("value")] = 6.0
    write_canonical(tmp_path / "canonical", ml_slice)
    result = _invoke(tmp_path)

    assert result.exit_code == 0, result.output
    assert "validate: interactions 1,500 -> 1,498, items 9,742 -> 9,742, users 15 -> 15" in result.output
    assert "quarantined interactions: value out of range 2" in result.output
    assert len(pd.read_parquet(tmp_path / "validated" / "interactions.parquet")) == 1498
    metrics = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert metrics["quarantined"] == {"validate: interactions: value out of range": 2}
    assert "GX Data Docs gx/uncommitted/data_docs/local_site/index.html" in result.output
    assert (tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


def test_cli_reports_unfit_data_in_one_line(ml_slice, write_canonical, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_canonical(tmp_path / "canonical", ml_slice)
    result = _invoke(tmp_path, "validate.min_interactions=2000")

    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fewer than validate.min_interactions=2,000" in errors[0]
    assert not (tmp_path / "validated").exists()
