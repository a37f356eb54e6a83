"""The ingest stage on real data: the embedded MovieLens, and a small real slice of every source format."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from components.cli import cli
from components.config import GenericColumns, GenericSource, IngestConfig
from components.data.ingest import ingest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EMBEDDED = ROOT / "data" / "raw" / "ml-latest-small"
TABLES = ("interactions", "items", "users", "quarantine")


def run(out: Path, **settings) -> tuple[dict[str, pd.DataFrame], dict]:
    """Ingest with these IngestConfig settings into `out`; the four tables and the report."""
    ingest(IngestConfig(**settings), out / "canonical", out / "reports")
    tables = {t: pd.read_parquet(out / "canonical" / f"{t}.parquet") for t in TABLES}
    return tables, json.loads((out / "reports" / "ingest.json").read_text())


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    return run(tmp_path_factory.mktemp("embedded"), path=EMBEDDED, domain="movies")


def test_embedded_movielens_counts(embedded):
    tables, report = embedded
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    assert (report["interactions"], report["users"], report["items"]) == (100_836, 610, 9_742)
    assert report["items_with_interactions"] == 9_724 == inter["item_id"].nunique()
    assert report["tags"] == 3_683
    assert len(inter) == 100_836 and len(users) == 610 and len(items) == 9_742
    assert report["time_min"].startswith("1996-03-29") and report["time_max"].startswith("2018-09-24")
    assert report["quarantined"] == 0 and len(tables["quarantine"]) == 0
    assert report["synthetic_timestamps"] is False


def test_embedded_movielens_schema_and_values(embedded):
    tables, _ = embedded
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    assert list(inter.columns) == ["user_id", "item_id", "timestamp", "event", "value", "domain"]
    assert inter["timestamp"].dtype == np.int64 and inter["value"].dtype == np.float64
    first = inter.iloc[0]
    assert (first.user_id, first.item_id, first.timestamp, first.event, first.value, first.domain) == (
        "1", "1", 964982703, "rate", 4.0, "movies")
    assert set(inter["value"].unique()) == {x / 2 for x in range(1, 11)}
    toy = items.set_index("item_id").loc["1"]
    assert toy.title == "Toy Story (1995)" and toy.year == 1995
    assert list(toy.categories) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    # Distinct tags, most frequent first: movie 1 was tagged "pixar" twice, "fun" once.
    assert toy.text == "pixar, fun"
    assert items.set_index("item_id").loc["2", "text"] == "fantasy, magic board game, Robin Williams, game"
    # "(no genres listed)" is no category.
    assert (items["categories"].map(len) == 0).sum() == 34
    assert set(inter["user_id"]) == set(users["user_id"])
    assert set(inter["item_id"]) <= set(items["item_id"])


def test_ml100k_layout(tmp_path):
    tables, report = run(tmp_path, path=FIXTURES / "ml-100k")
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    assert (len(inter), len(users), len(items), report["items_with_interactions"]) == (120, 90, 110, 109)
    assert tuple(inter.iloc[0][["user_id", "item_id", "timestamp", "value"]]) == ("196", "242", 881250949, 3.0)
    toy = items.set_index("item_id").loc["1"]
    assert list(toy.categories) == ["Animation", "Children's", "Comedy"]
    assert (toy.release_date, toy.year, toy.text) == ("1995-01-01", 1995, "")
    user = users.set_index("user_id").loc["196"]
    assert (user.age, user.gender, user.occupation, user.zip) == (49, "M", "writer", "55105")


def test_ml1m_layout(tmp_path):
    tables, report = run(tmp_path, path=FIXTURES / "ml-1m")
    inter, items, users = tables["interactions"], tables["items"], tables["users"]
    assert (len(inter), len(users), len(items), report["items_with_interactions"]) == (60, 57, 60, 59)
    assert tuple(inter.iloc[0][["user_id", "item_id", "timestamp", "value"]]) == ("196", "242", 881250949, 3.0)
    # movies.dat is ISO-8859-1.
    assert items.set_index("item_id").loc["73", "title"] == "Misérables, Les (1995)"
    user = users.set_index("user_id").loc["6"]
    assert (user.gender, user.age, user.occupation, user.zip) == ("F", 50, "homemaker", "55117")


def test_ml10m_layout_folds_tags_into_text(tmp_path):
    tables, report = run(tmp_path, path=FIXTURES / "ml-10m")
    inter, items = tables["interactions"], tables["items"]
    assert (len(inter), len(tables["users"]), len(items), report["tags"]) == (41, 8, 32, 419)
    assert 4.5 in set(inter["value"])
    pulp = items.set_index("item_id").loc["296"]
    assert pulp.title == "Pulp Fiction (1994)" and list(pulp.categories) == ["Comedy", "Crime", "Drama", "Thriller"]
    tags = pd.read_csv(FIXTURES / "ml-10m" / "tags.dat", sep="::", engine="python", header=None,
                       names=["u", "i", "tag", "t"])
    counts = tags[tags["i"] == 296]["tag"].value_counts()
    assert pulp.text.split(", ")[0] == counts.index[0]
    assert len(pulp.text.split(", ")) == len(counts)


def test_amazon_2018_reviews_and_metadata(tmp_path):
    # keep: the item without metadata stays (by default its reviews are quarantined: test_unknown_items.py).
    tables, report = run(tmp_path, source="amazon", path=FIXTURES / "amazon2018", domain="magazines",
                         unknown_items="keep")
    inter, items = tables["interactions"], tables["items"].set_index("item_id")
    assert (len(inter), len(tables["users"]), len(items)) == (60, 51, 12)
    assert (report["items_without_metadata"], report["duplicate_items"], report["titles_replaced"]) == (1, 1, 10)
    first = inter.iloc[0]
    assert (first.user_id, first.item_id, first.timestamp, first.event, first.value, first.domain) == (
        "A5QQOOZJOVPSF", "B00005N7P0", 1393372800, "review", 4.0, "magazines")
    # A real title is kept; an HTML fragment gives way to the description's first sentence.
    assert items.loc["B00005N7SS", "title"] == "SmartMoney (1-year)"
    assert items.loc["B00005N7P0", "title"] == "MAXIMUM PC is the ultimate upgrade for the savvy PC owners."
    assert items.loc["B00005N7P0", "text"].startswith("MAXIMUM PC is the ultimate upgrade")
    assert list(items.loc["B00005N7P0", "categories"]) == ["Magazine Subscriptions", "Technology",
                                                           "Computers & Internet"]
    assert items.loc["B00005N7P0", "brand"] == "Future US, Inc."
    # The reviewed item without a metadata row still gets one.
    assert items.loc["B000IMVNQU", "title"] == "B000IMVNQU" and items.loc["B000IMVNQU", "text"] == ""


def test_amazon_2014_and_2023_layouts_agree(tmp_path):
    old, report14 = run(tmp_path / "2014", source="amazon", path=FIXTURES / "amazon2014", unknown_items="keep")
    new, report23 = run(tmp_path / "2023", source="amazon", path=FIXTURES / "amazon2023", unknown_items="keep")
    assert (report14["interactions"], report14["users"], report14["items"]) == (30, 28, 12)
    assert "2014/2018 layout" in report14["notes"] and "2023 layout" in report23["notes"]
    columns = ["user_id", "item_id", "timestamp", "value"]
    pd.testing.assert_frame_equal(old["interactions"][columns], new["interactions"][columns])
    items14, items23 = old["items"].set_index("item_id"), new["items"].set_index("item_id")
    # 2014 metadata is Python literals; categories there are a list of lists, flattened without repeats.
    assert list(items14.loc["B00005N7SS", "categories"]) == ["Magazine Subscriptions", "Business & Investing",
                                                             "Finance"]
    assert items14.loc["B00005N7TM", "title"] == items23.loc["B00005N7TM", "title"] == "Woman's Day"
    assert items23.loc["B00005N7P0", "brand"] == "Future US, Inc."


def test_unisrec_rebuilds_sequences(tmp_path):
    tables, report = run(tmp_path, source="unisrec", path=FIXTURES / "unisrec")
    inter = tables["interactions"]
    assert (len(inter), len(tables["users"]), len(tables["items"])) == (94, 5, 93)
    assert report["quarantined"] == 0 and report["synthetic_timestamps"] and report["given_split"]
    assert "synthetic" in report["notes"]
    index = pd.read_csv(FIXTURES / "unisrec" / "Scientific.item2index", sep="\t", header=None, names=["asin", "i"])
    asin = dict(zip(index["i"], index["asin"]))
    # User 0 (ABW8NXS7SV55K): test row "0 1 ... 12 -> 13", valid target 12.
    user = inter[inter["user_id"] == "ABW8NXS7SV55K"]
    assert list(user["item_id"]) == [asin[i] for i in range(14)]
    assert list(user["timestamp"]) == list(range(14))
    assert list(user["split"]) == ["train"] * 12 + ["valid", "test"]
    # User 1570 has histories cut at 50: the rebuilt sequence is longer and ends as its test row says.
    test = pd.read_csv(FIXTURES / "unisrec" / "Scientific.test.inter", sep="\t")
    row = test[test["user_id:token"] == 1570].iloc[0]
    history = [asin[int(i)] for i in row["item_id_list:token_seq"].split()] + [asin[row["item_id:token"]]]
    users = pd.read_csv(FIXTURES / "unisrec" / "Scientific.user2index", sep="\t", header=None, names=["id", "i"])
    long = inter[inter["user_id"] == users.set_index("i").loc[1570, "id"]]
    assert len(long) > 51 and list(long["item_id"])[-51:] == history
    assert tables["items"].set_index("item_id").loc["B00TNNWMXI", "title"] != ""


def test_s3rec(tmp_path):
    tables, report = run(tmp_path, source="s3rec", path=FIXTURES / "s3rec", dataset="Beauty")
    inter, items = tables["interactions"], tables["items"].set_index("item_id")
    assert (len(inter), len(tables["users"]), len(items)) == (263, 25, 233)
    first = inter[inter["user_id"] == "1"]
    assert list(first["item_id"]) == ["1", "2", "3", "4", "5"] and list(first["timestamp"]) == [0, 1, 2, 3, 4]
    assert list(items.loc["4", "categories"]) == ["attr:1", "attr:2", "attr:3"]
    assert report["synthetic_timestamps"] and "synthetic" in report["notes"]


def test_recbole_atomic_matches_movielens(tmp_path):
    atomic, _ = run(tmp_path / "recbole", source="recbole", path=FIXTURES / "recbole")
    raw, _ = run(tmp_path / "ml", path=FIXTURES / "ml-100k")
    pd.testing.assert_frame_equal(atomic["interactions"], raw["interactions"])
    items = atomic["items"].set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and list(items.loc["1", "categories"]) == [
        "Animation", "Children's", "Comedy"]
    assert atomic["users"].set_index("user_id").loc["196", "occupation"] == "writer"


def _generic(interactions: str, unit: str, **files) -> GenericSource:
    return GenericSource(interactions=Path(interactions), timestamp_unit=unit, **files, columns=GenericColumns(
        user_id="uid", item_id="iid", value="stars", timestamp="when", categories="genres"))


def test_generic_csv_and_parquet_agree(tmp_path):
    csv, report = run(tmp_path / "csv", source="generic", path=FIXTURES / "generic",
                      generic=_generic("interactions.csv", "iso", items=Path("items.csv")))
    parquet, _ = run(tmp_path / "pq", source="generic", path=FIXTURES / "generic",
                     generic=_generic("interactions.parquet", "ms", users=Path("users.parquet")))
    assert (report["interactions"], report["users"], report["items"]) == (30, 2, 27)
    pd.testing.assert_frame_equal(csv["interactions"], parquet["interactions"])
    assert tuple(csv["interactions"].iloc[0][["user_id", "item_id", "timestamp", "value"]]) == (
        "1", "1", 964982703, 4.0)
    toy = csv["items"].set_index("item_id").loc["1"]
    assert toy.title == "Toy Story (1995)"
    assert list(toy.categories) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert parquet["users"].set_index("user_id").loc["5", "occupation"] == "other"


def test_small_chunks_give_the_same_tables(tmp_path):
    whole, _ = run(tmp_path / "whole", path=FIXTURES / "ml-100k")
    chunked, _ = run(tmp_path / "chunked", path=FIXTURES / "ml-100k", chunk_rows=7)
    for table in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(whole[table], chunked[table])
    csv, _ = run(tmp_path / "csv", source="generic", path=FIXTURES / "generic", chunk_rows=4,
                 generic=_generic("interactions.csv", "iso", items=Path("items.csv")))
    assert len(csv["interactions"]) == 30 and len(csv["items"]) == 27


def test_only_interacted_keeps_rated_items(tmp_path):
    tables, report = run(tmp_path, path=FIXTURES / "ml-100k", only_interacted=True)
    assert report["items"] == 109 == tables["interactions"]["item_id"].nunique() == len(tables["items"])


def test_cli_ingest(tmp_path):
    args = ["ingest", "--params", os.devnull, "--set", f"ingest.path={FIXTURES / 'ml-100k'}",
            "--set", f"paths.canonical={tmp_path / 'canonical'}", "--set", f"paths.reports={tmp_path / 'reports'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "120 interactions, 90 users, 110 items" in result.output
    assert (tmp_path / "canonical" / "interactions.parquet").is_file()
    assert (tmp_path / "reports" / "ingest.json").is_file()


def test_cli_user_error_is_one_line(tmp_path):
    args = ["ingest", "--params", os.devnull, "--set", f"ingest.path={tmp_path / 'nowhere'}",
            "--set", f"paths.canonical={tmp_path / 'canonical'}", "--set", f"paths.reports={tmp_path / 'reports'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ingest.path") and "does not exist" in lines[0]
