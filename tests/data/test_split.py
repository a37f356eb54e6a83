"""The split stage on the embedded MovieLens data: leave-one-out by time, k-core, max_history, cold items,
the source's own split, live windows, determinism, the SplitData contract and the CLI door."""
import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from components.cli import cli
from components.config import SplitConfig
from components.data.dataset import PARTS, SplitData
from components.data.split import split
from components.errors import RecloopError

RAW = Path(__file__).parents[2] / "data" / "raw" / "ml-latest-small"
KEY = ["user_id", "item_id"]  # MovieLens has one rating per (user, item): a row's identity


def write_canonical(interactions: pd.DataFrame, items: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    interactions.to_parquet(folder / "interactions.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    pd.DataFrame({"user_id": interactions["user_id"].unique()}).to_parquet(folder / "users.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    ratings = pd.read_csv(RAW / "ratings.csv")
    return pd.DataFrame({
        "user_id": ratings["userId"].astype(str), "item_id": ratings["movieId"].astype(str),
        "timestamp": ratings["timestamp"].astype("int64"), "event": "rate",
        "value": ratings["rating"].astype(float), "domain": "movies"})


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    movies = pd.read_csv(RAW / "movies.csv")
    return pd.DataFrame({"item_id": movies["movieId"].astype(str), "title": movies["title"], "text": "",
                         "categories": movies["genres"].str.split("|"), "domain": "movies"})


@pytest.fixture(scope="module")
def canonical(interactions, items, tmp_path_factory) -> Path:
    return write_canonical(interactions, items, tmp_path_factory.mktemp("validated"))


def run(in_dir: Path, out: Path, seed: int = 42, **cfg):
    summary = split(SplitConfig(**cfg), in_dir, out / "split", out / "reports", seed)
    parts = {p: pd.read_parquet(out / "split" / f"{p}.parquet") for p in PARTS}
    return summary, parts, pd.read_parquet(out / "split" / "items.parquet")


def reference_kcore(df: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """The k-core the slow, obvious way: filter with pandas group sizes until nothing changes."""
    while True:
        kept = df[(df.groupby("user_id")["item_id"].transform("size") >= min_user)
                  & (df.groupby("item_id")["user_id"].transform("size") >= min_item)]
        if len(kept) == len(df):
            return df
        df = kept


def test_loo_puts_each_users_latest_in_test_and_second_latest_in_valid(canonical, interactions, tmp_path):
    summary, parts, _ = run(canonical, tmp_path)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    users = interactions["user_id"].nunique()
    assert summary.valid == summary.test == summary.users == users
    assert valid["user_id"].is_unique and test["user_id"].is_unique
    assert set(valid["user_id"]) == set(test["user_id"]) == set(train["user_id"])

    # Time order per user: every train ts <= valid ts <= test ts.
    last_train = train.groupby("user_id")["timestamp"].max()
    v = valid.set_index("user_id")["timestamp"]
    t = test.set_index("user_id")["timestamp"]
    assert (last_train <= v[last_train.index]).all() and (v <= t[v.index]).all()

    # Ties in time are broken by the original row order: the test row is the user's last row among the
    # latest timestamps, valid the one before it.
    ordered = interactions.assign(row=np.arange(len(interactions))).sort_values(
        ["user_id", "timestamp", "row"], kind="stable")
    expected_test = ordered.groupby("user_id").tail(1).set_index("user_id")["item_id"]
    expected_valid = ordered.groupby("user_id").nth(-2).set_index("user_id")["item_id"]
    assert test.set_index("user_id")["item_id"].sort_index().equals(expected_test.sort_index())
    assert valid.set_index("user_id")["item_id"].sort_index().equals(expected_valid.sort_index())


@pytest.mark.parametrize("min_user, min_item, max_history", [(20, 10, 10_000), (20, 10, 50), (5, 1, 3)])
def test_parts_are_disjoint_and_cover_the_filtered_input(canonical, interactions, tmp_path,
                                                         min_user, min_item, max_history):
    summary, parts, items = run(canonical, tmp_path, min_user_interactions=min_user,
                                min_item_interactions=min_item, max_history=max_history)
    core = reference_kcore(interactions, min_user, min_item)
    # max_history keeps each user's latest rows (ties by original row order).
    core = core.assign(row=np.arange(len(core))).sort_values(["user_id", "timestamp", "row"], kind="stable")
    expected = core.groupby("user_id").tail(max_history)

    union = pd.concat(parts.values(), ignore_index=True)
    assert not union.duplicated(KEY).any()
    assert set(map(tuple, union[KEY].to_numpy())) == set(map(tuple, expected[KEY].to_numpy()))
    # Rows come through unchanged.
    merged = union.merge(interactions, on=KEY, suffixes=("", "_in"))
    for column in ("timestamp", "event", "value", "domain"):
        assert (merged[column] == merged[f"{column}_in"]).all()

    per_user = union.groupby("user_id").size()
    assert per_user.max() <= max_history and per_user.min() >= 3
    assert summary.kcore_dropped == len(interactions) - len(core)
    assert summary.history_dropped == len(core) - len(expected)
    assert set(items["item_id"]) == set(union["item_id"])
    if not summary.history_dropped:
        # Without history truncation the output is the k-core itself.
        assert union.groupby("item_id").size().min() >= min_item
        assert per_user.min() >= min_user


def test_cold_items_never_train_and_are_targets(canonical, tmp_path):
    _, warm, _ = run(canonical, tmp_path / "warm")
    summary, parts, items = run(canonical, tmp_path / "cold", cold_item_fraction=0.1)
    cold = set(items.loc[items["cold"], "item_id"])
    assert summary.cold_items == len(cold) > 0
    assert not cold & set(parts["train"]["item_id"])
    targets = set(parts["valid"]["item_id"]) | set(parts["test"]["item_id"])
    assert cold <= targets
    # Only training rows were removed: each remaining user keeps exactly the targets they had.
    for stage in ("valid", "test"):
        kept = warm[stage][warm[stage]["user_id"].isin(parts[stage]["user_id"])]
        assert set(map(tuple, kept[KEY].to_numpy())) == set(map(tuple, parts[stage][KEY].to_numpy()))
    assert summary.excluded_users == len(warm["test"]) - len(parts["test"])

    data = SplitData.load(tmp_path / "cold" / "split")
    assert (data.item_popularity()[data.items["cold"].to_numpy()] == 0).all()


def test_users_left_without_history_by_the_cold_holdout_are_excluded(interactions, items, tmp_path):
    # Users' first few ratings only: short histories that a large cold share can empty.
    small = interactions.groupby("user_id").head(4)
    in_dir = write_canonical(small, items, tmp_path / "in")
    _, warm, _ = run(in_dir, tmp_path / "warm", min_user_interactions=3)
    summary, parts, _ = run(in_dir, tmp_path / "cold", min_user_interactions=3, cold_item_fraction=0.6)
    assert summary.excluded_users > 0
    assert summary.users == len(warm["test"]) - summary.excluded_users
    union = pd.concat(parts.values())
    assert union.groupby("user_id").size().min() >= 3
    assert set(parts["train"]["user_id"]) == set(parts["test"]["user_id"]) == set(parts["valid"]["user_id"])
    assert f"{summary.excluded_users} excluded" in summary.describe()


def given_split(interactions: pd.DataFrame) -> pd.DataFrame:
    """A source's own split: each user's latest row is test; only even-numbered users get a valid row."""
    ordered = interactions.assign(row=np.arange(len(interactions))).sort_values(
        ["user_id", "timestamp", "row"], kind="stable")
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    even = ordered["user_id"].astype(int) % 2 == 0
    part = np.where(from_end == 0, "test", np.where((from_end == 1) & even, "valid", "train"))
    return ordered.assign(split=part).sort_values("row").drop(columns="row")


def test_given_mode_keeps_the_sources_assignment(interactions, items, tmp_path):
    source = given_split(interactions)
    in_dir = write_canonical(source, items, tmp_path / "in")
    summary, parts, _ = run(in_dir, tmp_path, mode="given", max_history=10_000)
    assert sum(len(p) for p in parts.values()) == len(source)
    for name, part in parts.items():
        assert (part["split"] == name).all()
        assert set(map(tuple, part[KEY].to_numpy())) == set(
            map(tuple, source.loc[source["split"] == name, KEY].to_numpy()))
    assert (parts["valid"]["user_id"].astype(int) % 2 == 0).all()
    assert summary.users == source["user_id"].nunique()
    SplitData.load(tmp_path / "split")


def test_given_mode_refuses_a_missing_or_inconsistent_split(interactions, items, tmp_path):
    with pytest.raises(RecloopError, match="no `split` column"):
        run(write_canonical(interactions, items, tmp_path / "none"), tmp_path / "a", mode="given")

    source = given_split(interactions)
    two_tests = source.copy()
    two_tests.loc[two_tests.index[0], "split"] = "test"  # user 1's first row, besides their latest
    with pytest.raises(RecloopError, match="more than one test"):
        run(write_canonical(two_tests, items, tmp_path / "two"), tmp_path / "b", mode="given")

    early = source.copy()
    user = early["user_id"] == "2"
    early.loc[user & (early["split"] == "valid"), "split"] = "train"
    early.loc[early.index[user][np.argmin(early.loc[user, "timestamp"])], "split"] = "valid"
    with pytest.raises(RecloopError, match="older than"):
        run(write_canonical(early, items, tmp_path / "early"), tmp_path / "c", mode="given")


def test_time_split_trains_before_the_cutoff_and_windows_the_rest(canonical, interactions, tmp_path):
    cutoff = int(pd.Timestamp("2015-01-01", tz="UTC").timestamp())
    summary, parts, _ = run(canonical, tmp_path, time={"cutoff": date(2015, 1, 1), "window_days": 365})
    assert all((p["timestamp"] < cutoff).all() for p in parts.values())

    live_dir = tmp_path / "split" / "live"
    manifest = json.loads((live_dir / "windows.json").read_text())
    windows = manifest["windows"]
    assert summary.windows == len(windows) == 4
    frames = [pd.read_parquet(live_dir / w["file"]) for w in windows]
    for k, (w, frame) in enumerate(zip(windows, frames)):
        assert w["index"] == k and w["interactions"] == len(frame)
        assert w["start_ts"] == cutoff + k * 365 * 86_400 and w["end_ts"] - w["start_ts"] == 365 * 86_400
        assert frame["timestamp"].between(w["start_ts"], w["end_ts"] - 1).all()
        assert frame["timestamp"].is_monotonic_increasing
    # The windows partition everything at/after the cutoff, rows whole, new users and items included.
    live = pd.concat(frames, ignore_index=True)
    later = interactions[interactions["timestamp"] >= cutoff]
    assert len(live) == len(later) == summary.live_interactions
    assert set(map(tuple, live[KEY].to_numpy())) == set(map(tuple, later[KEY].to_numpy()))
    assert list(live.columns) == list(interactions.columns)
    known = set(parts["train"]["user_id"])
    assert windows[0]["new_users"] == len(set(frames[0]["user_id"]) - known) > 0


def test_same_seed_same_split_and_the_seed_picks_the_cold_items(canonical, tmp_path):
    cfg = {"cold_item_fraction": 0.05, "max_history": 50}
    first = run(canonical, tmp_path / "a", seed=7, **cfg)
    again = run(canonical, tmp_path / "b", seed=7, **cfg)
    other = run(canonical, tmp_path / "c", seed=8, **cfg)
    for name in PARTS:
        pd.testing.assert_frame_equal(first[1][name], again[1][name])
    pd.testing.assert_frame_equal(first[2], again[2])
    assert set(first[2].loc[first[2]["cold"], "item_id"]) != set(other[2].loc[other[2]["cold"], "item_id"])


def test_output_loads_as_split_data_with_consistent_matrices(canonical, tmp_path):
    summary, parts, _ = run(canonical, tmp_path, min_item_interactions=5)
    data = SplitData.load(tmp_path / "split")
    assert (data.n_users, data.n_items) == (summary.users, summary.items)
    assert not data.items["cold"].any()
    popularity = data.item_popularity()
    assert popularity.sum() == summary.train
    counts = parts["train"]["item_id"].value_counts()
    assert (popularity[data.items.set_index("item_id").index.get_indexer(counts.index)] == counts.to_numpy()).all()
    seen = data.seen_matrix(data.history("test"))
    assert seen.nnz == summary.train + summary.valid  # one rating per (user, item) in MovieLens
    # A test target is never among the items the ranking filters out as seen.
    assert seen[data.test["user_idx"].to_numpy(), data.test["item_idx"].to_numpy()].sum() == 0
    report = json.loads((tmp_path / "reports" / "split.json").read_text())
    assert report["train"] == summary.train and report["kcore_passes"] == summary.kcore_passes


def test_cli_splits_into_the_configured_folders_and_reports_errors_in_one_line(canonical, tmp_path):
    overrides = ["--set", f"paths.validated={canonical}", "--set", f"paths.split={tmp_path / 'split'}",
                 "--set", f"paths.reports={tmp_path / 'reports'}", "--set", "split.max_history=20"]
    result = CliRunner().invoke(cli, ["split", "--params", os.devnull, *overrides])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "valid" in result.output
    assert SplitData.load(tmp_path / "split").train.groupby("user_idx").size().max() == 18
    assert json.loads((tmp_path / "reports" / "split.json").read_text())["users"] > 0

    missing = ["--set", f"paths.validated={tmp_path / 'nowhere'}"]
    result = CliRunner().invoke(cli, ["split", "--params", os.devnull, *missing])
    assert result.exit_code == 2
    assert "error:" in result.output and "recloop validate" in result.output
