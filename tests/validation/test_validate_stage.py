"""The validate stage on real MovieLens data: clean data passes untouched, corrupted copies lose exactly their bad rows.

Corruptions mimic what survives ingest: unparseable fields as nulls, out-of-range values and times,
repeated events, ids that name nothing, a dropped column.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import load_params
from components.errors import RecloopError
from components.validation.validate import validate

REPO = Path(__file__).resolve().parents[2]
TEN_YEARS = 10 * 365 * 86400


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}.parquet")


def _as_tuples(frame: pd.DataFrame) -> pd.DataFrame:
    # Parquet gives list columns back as numpy arrays; compare contents.
    return frame.assign(categories=[tuple(v) for v in frame["categories"]]) if "categories" in frame else frame


def test_movielens_validates_clean(movielens, write_canonical, tmp_path, gx_project):
    cfg = load_params(REPO / "params.yaml").validate_
    canonical = write_canonical(tmp_path / "canonical", movielens)
    summary = validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", gx_project)

    assert summary.rows_in == summary.rows_out == {"interactions": 100_836, "items": 9_742, "users": 610}
    assert summary.quarantined == {} and summary.ingest_quarantined == 0
    assert len(_read(tmp_path / "validated", "quarantine")) == 0
    for name, frame in movielens.items():
        pd.testing.assert_frame_equal(_as_tuples(_read(tmp_path / "validated", name)), _as_tuples(frame))
    metrics = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert metrics["passed"] and metrics["tables"]["interactions"]["rows_out"] == 100_836
    assert all(check["passed"] for check in metrics["checks"].values())


def _corrupt(tables: dict[str, pd.DataFrame]) -> dict[str, dict[int, str]]:
    """Damage the slice in place; return {table: {row position: expected reason}}."""
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    # Unparseable timestamps survive ingest as nulls, which makes the column float.
    inter["timestamp"] = inter["timestamp"].astype("float64")
    original_300 = inter.iloc[300].copy()
    now = time.time()
    damage = [
        (10, "user_id", None, "missing user_id"),
        (20, "item_id", None, "missing item_id"),
        (30, "timestamp", np.nan, "missing timestamp"),
        (40, "value", np.nan, "missing value"),
        (50, "value", 7.0, "value out of range"),
        (60, "value", 0.0, "value out of range"),
        (70, "timestamp", 100.0, "timestamp out of range"),
        (80, "timestamp", now + TEN_YEARS, "timestamp out of range"),
        (90, "item_id", "999999999", "unknown item"),
        (100, "user_id", "99999", "unknown user"),
        (110, "item_id", "888888888", "value out of range"),  # and its value below: the earlier rule wins
        (110, "value", 9.0, "value out of range"),
        (120, "event", None, "missing event"),
        (300, "value", 9.0, "value out of range"),
    ]
    expected = {}
    for pos, column, value, reason in damage:
        inter.iloc[pos, inter.columns.get_loc(column)] = value
        expected[pos] = reason
    # Appended duplicates: exact, same key with another value, and a good copy of a row that is bad.
    extra = pd.DataFrame([inter.iloc[200], inter.iloc[201].copy(), original_300, inter.iloc[200]])
    extra.iloc[1, extra.columns.get_loc("value")] = 1.0
    tables["interactions"] = inter = pd.concat([inter, extra], ignore_index=True)
    n = len(inter)
    expected.update({n - 4: "duplicate event", n - 3: "duplicate event", n - 1: "duplicate event"})

    # Items: a title lost, categories lost, a repeated id, one with neither title nor text (a warning).
    watched = inter["item_id"].iloc[400]
    lost_title = int(np.flatnonzero(items["item_id"] == watched)[0])
    items.iloc[lost_title, items.columns.get_loc("title")] = None
    items.iloc[9, items.columns.get_loc("categories")] = None
    items.iloc[7, items.columns.get_loc("title")] = ""
    tables["items"] = items = pd.concat([items, items.iloc[[5]].assign(title="Another title")], ignore_index=True)
    expected_items = {lost_title: "missing title", 9: "missing categories", len(items) - 1: "duplicate item"}
    # Interactions with a quarantined item now name no item in the clean catalog.
    gone = items["item_id"].iloc[[lost_title, 9]]
    for pos in np.flatnonzero(inter["item_id"].isin(gone)):
        expected.setdefault(int(pos), "unknown item")

    tables["users"] = users = pd.concat([users, pd.DataFrame({"user_id": ["1", None]})], ignore_index=True)
    expected_users = {len(users) - 2: "duplicate user", len(users) - 1: "missing user_id"}
    return {"interactions": expected, "items": expected_items, "users": expected_users}


@pytest.fixture(scope="module")
def corrupted(ml_slice_factory, write_canonical, cfg, tmp_path_factory, gx_project):
    tables = ml_slice_factory()
    expected = _corrupt(tables)
    root = tmp_path_factory.mktemp("corrupted")
    ingest_quarantine = pd.DataFrame({"table": ["interactions", "interactions"],
                                      "reason": ["unparseable timestamp", "unparseable timestamp"],
                                      "row": ["1,31,2.5,yesterday", "1,1029,3.0,"]})
    canonical = write_canonical(root / "canonical", tables, ingest_quarantine)
    summary = validate(cfg, canonical, root / "validated", root / "reports", gx_project)
    return {"tables": tables, "expected": expected, "summary": summary, "root": root}


@pytest.mark.parametrize("table", ["interactions", "items", "users"])
def test_quarantine_holds_exactly_the_bad_rows(corrupted, table):
    quarantine = _read(corrupted["root"] / "validated", "quarantine")
    ours = quarantine[(quarantine["table"] == table) & (quarantine["stage"] == "validate")]
    got = dict(zip(ours["row_index"].astype(int), ours["reason"]))
    assert got == corrupted["expected"][table]


@pytest.mark.parametrize("table", ["interactions", "items", "users"])
def test_good_rows_are_kept_unchanged(corrupted, table):
    frame = corrupted["tables"][table]
    kept = frame.drop(index=list(corrupted["expected"][table])).reset_index(drop=True)
    if table == "interactions":
        kept["timestamp"] = kept["timestamp"].astype("int64")  # the contract's type, once the nulls are gone
    clean = _read(corrupted["root"] / "validated", table)
    pd.testing.assert_frame_equal(_as_tuples(clean), _as_tuples(kept))


def test_quarantine_keeps_original_rows_and_ingest_rejects(corrupted):
    quarantine = _read(corrupted["root"] / "validated", "quarantine")
    row_50 = quarantine.loc[(quarantine["table"] == "interactions") & (quarantine["row_index"] == 50), "row"].item()
    assert "'value': '7.0'" in row_50 and "'user_id': '1'" in row_50
    ingest = quarantine[quarantine["stage"] == "ingest"]
    assert ingest["row"].tolist() == ["1,31,2.5,yesterday", "1,1029,3.0,"]
    assert corrupted["summary"].ingest_quarantined == 2


def test_summary_counts_per_reason(corrupted):
    summary = corrupted["summary"]
    expected = Counter(f"{table}: {reason}" for table, rows in corrupted["expected"].items()
                       for reason in rows.values())
    assert summary.quarantined == dict(expected)
    assert summary.warnings == {"items: empty title and text": 1}
    text = summary.describe()
    assert "quarantined interactions: unknown item 6, value out of range 4, duplicate event 3" in text
    assert "quarantined by ingest: 2 rows" in text and "warning (rows kept): items: empty title and text 1" in text


def test_report_names_failing_expectations(corrupted):
    reports = corrupted["root"] / "reports"
    page = (reports / "validation.html").read_text()
    for name in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                 "expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique",
                 "expect_column_values_to_not_match_regex", "values_in_catalog", "PASSED"):
        assert name in page
    for reasons in corrupted["expected"].values():
        for reason in reasons.values():
            assert reason in page
    metrics = json.loads((reports / "validation.json").read_text())
    assert metrics["quarantined"]["validate: interactions: value out of range"] == 4
    assert metrics["quarantined"]["ingest: interactions: unparseable timestamp"] == 2
    assert metrics["tables"]["users"] == {"rows_in": 17, "rows_out": 15, "quarantined": 2, "ingest_quarantined": 0}
    assert not metrics["checks"]["interactions.value.expect_column_values_to_be_between"]["passed"]
    assert metrics["checks"]["interactions.user_id,item_id,timestamp,event.expect_compound_columns_to_be_unique"][
        "quarantined"] == 3


def test_missing_column_is_one_clear_error(ml_slice, write_canonical, cfg, tmp_path, gx_project):
    ml_slice["interactions"] = ml_slice["interactions"].drop(columns="value")
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    with pytest.raises(RecloopError, match=r"interactions\.parquet lacks value \(a canonical") as caught:
        validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", gx_project)
    assert "items.parquet" not in str(caught.value) and "users.parquet" not in str(caught.value)
    assert not (tmp_path / "validated").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("column, dtype, message", [
    ("user_id", "int64", "interactions.user_id has dtype int64"),
    ("timestamp", "str", "timestamp could not run: .*; 1,500 rows with timestamp not a number"),
], ids=["int ids", "text timestamps"])
def test_a_column_of_the_wrong_type_is_one_clear_error(ml_slice, write_canonical, cfg, tmp_path, gx_project,
                                                       column, dtype, message):
    ml_slice["interactions"][column] = ml_slice["interactions"][column].astype(dtype)
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    with pytest.raises(RecloopError, match=message):
        validate(cfg, canonical, tmp_path / "validated", tmp_path / "reports", gx_project)
    assert not (tmp_path / "validated").exists()


@pytest.mark.parametrize("damage, setting, message", [
    ("values", {}, r"26\.7% of interactions were quarantined, more than validate.max_quarantine_fraction=0.2"),
    (None, {"min_users": 16}, r"only 15 users with interactions are left, fewer than validate.min_users=16"),
], ids=["too many quarantined", "too few users"])
def test_unfit_data_fails_and_leaves_out_dir_untouched(ml_slice, write_canonical, cfg, tmp_path, gx_project,
                                                       damage, setting, message):
    if damage:
        ml_slice["interactions"].iloc[:400, ml_slice["interactions"].columns.get_loc("value")] = 42.0
    canonical = write_canonical(tmp_path / "canonical", ml_slice)
    out = tmp_path / "validated"
    out.mkdir()
    (out / "interactions.parquet").write_bytes(b"the previous run's table")
    (out / "note.txt").write_text("keep me")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}

    with pytest.raises(RecloopError, match=message):
        validate(cfg.model_copy(update=setting), canonical, out, tmp_path / "reports", gx_project)

    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canonical", "reports", "validated"]
    assert "FAILED" in (tmp_path / "reports" / "validation.html").read_text()
    assert json.loads((tmp_path / "reports" / "validation.json").read_text())["passed"] is False
