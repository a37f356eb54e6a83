"""The HetRec Last.fm adapter on a real slice (tests/fixtures/lastfm): counts, the seeded synthetic order,
the quarantine, validation and the split under the documented overrides, and the MKR music graph's links."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from components.config import IngestConfig, KGConfig, load_params
from components.data.ingest import ingest
from components.data.sources.kg import read_kg
from components.data.sources.lastfm import NOT_A_COUNT, REPEATED_PAIR
from components.data.split import split
from components.errors import RecloopError
from components.validation.kg import validate_kg
from components.validation.validate import validate

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "lastfm"
# What a Last.fm run sets (docs/data.md): synthetic time from 1970, listen counts of 1 and up, no live windows.
LASTFM = ["validate.min_timestamp=0", "validate.min_value=1", "validate.max_value=null", "split.time.cutoff=null"]


def run(path: Path, out: Path, **settings) -> tuple[dict[str, pd.DataFrame], dict]:
    ingest(IngestConfig(source="lastfm", path=path, domain="music", **settings), out / "canonical", out / "reports")
    tables = {t: pd.read_parquet(out / "canonical" / f"{t}.parquet")
              for t in ("interactions", "items", "users", "quarantine")}
    return tables, json.loads((out / "reports" / "ingest.json").read_text())


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return run(FIXTURE / "hetrec", tmp_path_factory.mktemp("lastfm"))


def test_counts_values_and_titles(clean):
    tables, report = clean
    inter, items = tables["interactions"], tables["items"]
    assert (report["interactions"], report["users"], report["items"]) == (450, 30, 265)
    assert report["quarantined"] == 0 and report["synthetic_timestamps"] is True
    assert report["artists_latin1"] == 0
    assert set(inter["event"]) == {"listen"} and set(inter["domain"]) == {"music"}
    # user_artists.dat's first row: user 2 listened to artist 51 13,883 times.
    first = inter.set_index(["user_id", "item_id"]).loc[("2", "51")]
    assert first["value"] == 13_883.0
    assert items.set_index("item_id").loc["51", "title"] == "Duran Duran"
    assert (items["text"] == "").all() and items["categories"].map(len).eq(0).all()


def test_each_user_gets_a_seeded_random_order_whatever_the_file_order(clean, tmp_path):
    tables, _ = clean
    inter = tables["interactions"]
    # Each user's timestamps are the positions 0..n-1: a total order, no ties.
    for _, stamps in inter.groupby("user_id")["timestamp"]:
        assert sorted(stamps) == list(range(len(stamps)))
    # Not the file's order (artist ids ascend within a user there).
    assert not all(g.sort_values("timestamp")["item_id"].astype(int).is_monotonic_increasing
                   for _, g in inter.groupby("user_id"))

    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    shutil.copy(FIXTURE / "hetrec" / "artists.dat", shuffled)
    lines = (FIXTURE / "hetrec" / "user_artists.dat").read_bytes().splitlines(keepends=True)
    (shuffled / "user_artists.dat").write_bytes(lines[0] + b"".join(reversed(lines[1:])))
    key = ["user_id", "item_id"]
    again = run(shuffled, tmp_path / "again")[0]["interactions"]
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True)[[*key, "timestamp"]],
                                  inter.sort_values(key).reset_index(drop=True)[[*key, "timestamp"]])
    other = run(FIXTURE / "hetrec", tmp_path / "other", order_seed=1)[0]["interactions"]
    assert not other.sort_values(key)["timestamp"].reset_index(drop=True).equals(
        inter.sort_values(key)["timestamp"].reset_index(drop=True))


def test_malformed_rows_are_quarantined_with_a_reason(tmp_path):
    folder = tmp_path / "hetrec"
    shutil.copytree(FIXTURE / "hetrec", folder)
    with open(folder / "user_artists.dat", "ab") as f:
        f.write(b"2\t51\n"                  # a field missing
                b"2\t52\tmany\n"            # not a count
                b"3\t52\t0\n"               # no listen
                b"2\t51\t7\n"               # user 2 and artist 51 again
                b"x1\t51\t3\n"              # not a user id
                b"4\t\xe9\t3\n"             # not utf-8
                b"4\t999999\t3\n")          # an artist artists.dat lacks
    with open(folder / "artists.dat", "ab") as f:
        f.write(b"999998\tBj\xf6rk\thttp://www.last.fm/music/Bj%C3%B6rk\t\n")  # a latin-1 name
    tables, report = run(folder, tmp_path / "out")
    reasons = tables["quarantine"].set_index("row")["reason"].to_dict()
    unknown = next(r for r in reasons if r.startswith("4,999999,"))
    assert reasons.pop(unknown) == "unknown item"  # caught once the whole catalog is read: its canonical fields
    assert reasons == {"2\t51": "wrong number of fields", "2\t52\tmany": NOT_A_COUNT, "3\t52\t0": NOT_A_COUNT,
                       "2\t51\t7": REPEATED_PAIR, "x1\t51\t3": "non-numeric user_id",
                       "4\t\\xe9\t3": "undecodable bytes"}
    assert report["interactions"] == 450 and report["quarantined"] == 7
    # The first of a repeated pair is kept; the latin-1 name is read, not dropped.
    inter = tables["interactions"].set_index(["user_id", "item_id"])
    assert inter.loc[("2", "51"), "value"] == 13_883.0
    assert report["artists_latin1"] == 1
    assert tables["items"].set_index("item_id").loc["999998", "title"] == "Björk"


def test_a_file_without_the_hetrec_header_is_an_error(tmp_path):
    (tmp_path / "user_artists.dat").write_text("2\t51\t13883\n")
    with pytest.raises(RecloopError, match="should start with the header userID artistID weight"):
        ingest(IngestConfig(source="lastfm", path=tmp_path), tmp_path / "canonical", tmp_path / "reports")


def test_validation_and_split_accept_the_synthetic_time(clean, tmp_path):
    tables, _ = clean
    canonical = tmp_path / "canonical"
    canonical.mkdir()
    for name, frame in tables.items():
        frame.to_parquet(canonical / f"{name}.parquet", index=False)
    small = "validate.min_interactions=100"  # the slice is small; the rest as a Last.fm run sets it
    params = load_params(REPO / "params.yaml", [*LASTFM, small])
    summary = validate(params.validate_, canonical, tmp_path / "validated", tmp_path / "reports", tmp_path / "gx")
    assert summary.rows_out == summary.rows_in == {"interactions": 450, "items": 265, "users": 30}
    split(params.split, tmp_path / "validated", tmp_path / "split", tmp_path / "reports", params.seed)
    test = pd.read_parquet(tmp_path / "split" / "test.parquet")
    # Leave-one-out by the synthetic time: each user's test artist is the last of its random order.
    last = tables["interactions"].sort_values("timestamp").groupby("user_id").tail(1)
    assert set(zip(test["user_id"], test["item_id"])) == set(zip(last["user_id"], last["item_id"]))
    # MovieLens's defaults (ratings 0.5-5, from 1995) would reject every row: the overrides are needed.
    strict = load_params(REPO / "params.yaml", [small]).validate_
    with pytest.raises(RecloopError, match="quarantined"):
        validate(strict, canonical, tmp_path / "strict", tmp_path / "strict-reports", tmp_path / "gx")


def test_the_music_graph_links_resolve_to_the_ingested_artists(clean):
    tables, _ = clean
    result = validate_kg(read_kg(KGConfig(path=FIXTURE / "kg")), tables["items"]["item_id"])
    metrics = result.metrics()
    assert metrics["links_in"] == metrics["links"] == 68 and result.link_loss() == 0
    assert len(result.graph.triples) == 252 and len(result.quarantine()) == 0
    assert "music.artist.origin" in metrics["relations"]
