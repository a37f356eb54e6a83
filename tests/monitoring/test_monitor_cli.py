"""`recloop monitor`: defaults taken from the pipeline's outputs (train split, newest live window,
item text vectors), and user mistakes reported in one line."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from monitoring_data import write, years

from components.cli import cli


def test_monitor_reads_the_split_and_features_it_finds(tmp_path: Path, ratings: pd.DataFrame,
                                                      item_vectors: dict[str, Path]) -> None:
    split, features = tmp_path / "split", tmp_path / "features"
    (split / "live").mkdir(parents=True)
    features.mkdir()
    write(years(ratings, 1999, 2000), split / "train.parquet")
    write(years(ratings, 2017, 2017), split / "live" / "window_000.parquet")
    write(years(ratings, 2018, 2018), split / "live" / "window_001.parquet")
    shutil.copy(item_vectors["item_vectors"], features / "item_text.npy")
    shutil.copy(item_vectors["items"], split / "items.parquet")
    settings = {"paths.split": split, "paths.features": features, "paths.reports": tmp_path / "reports",
                "monitor.workspace": tmp_path / "evidently_workspace"}
    args = ["monitor", "--params", os.devnull]
    args += [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    # The progress bar goes to stderr; stdout holds the summary alone.
    assert result.stdout.startswith("monitor window_001-") and "DRIFT, retrain" in result.stdout
    latest = json.loads((tmp_path / "reports" / "monitoring" / "latest.json").read_text())
    assert latest["verdict"]["drift"] and latest["verdict"]["current"]["start"].startswith("2018-01")
    # The featurize output was found: text drift was measured.
    assert latest["verdict"]["signals"]["text_drift"]["value"] is not None
    assert Path(latest["report"]).exists() and (tmp_path / "evidently_workspace").is_dir()


def test_monitor_reports_a_missing_window_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["monitor", "--params", os.devnull,
                                      "--reference", str(tmp_path / "train.parquet"),
                                      "--current", str(tmp_path / "window.parquet")])
    assert result.exit_code == 2
    assert result.output == (f"error: reference interactions {tmp_path / 'train.parquet'} do not exist: "
                             "run `recloop split`, or pass --reference\n")
