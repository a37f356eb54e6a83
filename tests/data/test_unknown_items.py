"""Interactions with an item that a complete catalog lacks: quarantined as `unknown item` by default,
kept as text-less items with `ingest.unknown_items: keep` (for sources whose catalog is partial)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from components.config import IngestConfig
from components.data.ingest import ingest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UNKNOWN = "987654321"


def run(out: Path, **settings) -> tuple[dict[str, pd.DataFrame], dict]:
    ingest(IngestConfig(**settings), out / "canonical", out / "reports")
    tables = {t: pd.read_parquet(out / "canonical" / f"{t}.parquet")
              for t in ("interactions", "items", "users", "quarantine")}
    return tables, json.loads((out / "reports" / "ingest.json").read_text())


@pytest.fixture
def corrupted(tmp_path) -> Path:
    """ml-latest-u1-10 with two ratings of a movie that movies.csv lacks: one by user 1, one by a user
    (999) who rated nothing else."""
    folder = Path(shutil.copytree(FIXTURES / "ml-latest-u1-10", tmp_path / "ml"))
    with open(folder / "ratings.csv", "a") as f:
        f.write(f"1,{UNKNOWN},5.0,964990000\n999,{UNKNOWN},3.5,964990001\n")
    return folder


def test_unknown_items_are_quarantined_by_default(corrupted, tmp_path):
    clean, clean_report = run(tmp_path / "clean", path=FIXTURES / "ml-latest-u1-10")
    tables, report = run(tmp_path / "out", path=corrupted)
    inter, items, quarantine = tables["interactions"], tables["items"], tables["quarantine"]
    assert UNKNOWN not in set(inter["item_id"]) and UNKNOWN not in set(items["item_id"])
    assert sorted(zip(quarantine["table"], quarantine["reason"], quarantine["row"])) == [
        ("interactions", "unknown item", f"1,{UNKNOWN},964990000,rate,5.0"),
        ("interactions", "unknown item", f"999,{UNKNOWN},964990001,rate,3.5")]
    assert report["quarantined_by_reason"] == {"interactions: unknown item": 2}
    # What stays is exactly the uncorrupted source's tables, counts and time range included.
    for name in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(tables[name], clean[name])
    for key in ("interactions", "users", "items", "items_with_interactions", "items_without_metadata",
                "time_min", "time_max"):
        assert report[key] == clean_report[key], key


def test_keep_makes_them_items_without_text(corrupted, tmp_path):
    tables, report = run(tmp_path, path=corrupted, unknown_items="keep")
    inter, items = tables["interactions"], tables["items"].set_index("item_id")
    assert (inter["item_id"] == UNKNOWN).sum() == 2
    assert (items.loc[UNKNOWN, "title"], items.loc[UNKNOWN, "text"]) == (UNKNOWN, "")
    assert "999" in set(tables["users"]["user_id"])
    assert report["quarantined"] == 0 and report["items_without_metadata"] == 1


@pytest.mark.parametrize("fixture, ratings, line", [
    ("ml-100k", "u.data", f"196\t{UNKNOWN}\t3\t881250949\n"),
    ("ml-1m", "ratings.dat", f"196::{UNKNOWN}::3::881250949\n"),
])
def test_every_movielens_layout_knows_its_catalog(tmp_path, fixture, ratings, line):
    folder = Path(shutil.copytree(FIXTURES / fixture, tmp_path / fixture))
    with open(folder / ratings, "a") as f:
        f.write(line)
    tables, report = run(tmp_path, path=folder)
    assert report["quarantined_by_reason"] == {"interactions: unknown item": 1}
    assert UNKNOWN not in set(tables["items"]["item_id"])


def test_without_a_catalog_file_items_are_kept(tmp_path, corrupted):
    (corrupted / "movies.csv").unlink()
    tables, report = run(tmp_path, path=corrupted)
    assert report["quarantined"] == 0
    assert UNKNOWN in set(tables["items"]["item_id"])


def test_amazon_metadata_is_the_catalog_unless_only_interacted(tmp_path):
    # The 2018 fixture's item B000IMVNQU has reviews but no metadata row.
    tables, report = run(tmp_path / "full", source="amazon", path=FIXTURES / "amazon2018")
    assert "B000IMVNQU" not in set(tables["interactions"]["item_id"])
    assert report["quarantined_by_reason"]["interactions: unknown item"] > 0
    tables, report = run(tmp_path / "cut", source="amazon", path=FIXTURES / "amazon2018", only_interacted=True)
    assert "B000IMVNQU" in set(tables["interactions"]["item_id"])
