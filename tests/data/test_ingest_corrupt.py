"""Ingest on corrupted copies of real files: bad rows land in the quarantine with their reason, good rows
all arrive, and a missing file or column is one clear error."""
from __future__ import annotations

import gzip
import json
import shutil
import zlib
from pathlib import Path

import pandas as pd
import pytest

from components.config import GenericColumns, GenericSource, IngestConfig
from components.data.ingest import ingest
from components.errors import RecloopError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EMBEDDED = ROOT / "data" / "raw" / "ml-latest-small"


def run(out: Path, **settings) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    ingest(IngestConfig(**settings), out / "canonical", out / "reports")
    return (pd.read_parquet(out / "canonical" / "interactions.parquet"),
            pd.read_parquet(out / "canonical" / "quarantine.parquet"),
            json.loads((out / "reports" / "ingest.json").read_text()))


def copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def reasons(quarantine: pd.DataFrame) -> list[tuple[str, str, str]]:
    return sorted(zip(quarantine["table"], quarantine["reason"], quarantine["row"]))


def test_tab_separated_bad_lines(tmp_path):
    folder = copy("ml-100k", tmp_path)
    good = (folder / "u.data").read_bytes()
    bad = [b"196\t242\t3", b"x7\t242\t3\t881250949", b"196\t242\tfive\t881250949", b"196\t242\t3\tyesterday",
           b"196\t24\xff\t3\t881250949", b"196\t242\t3\t881250949\t1"]
    lines = good.splitlines()
    (folder / "u.data").write_bytes(b"\n".join(lines[:50] + bad[:3] + lines[50:] + bad[3:]) + b"\n")
    with open(folder / "u.item", "ab") as f:
        f.write(b"17x|Fake (1995)|01-Jan-1995||http://x|" + b"|".join([b"0"] * 19) + b"\n")
    with open(folder / "u.user", "ab") as f:
        f.write(b"944|24|M|technician\n")
    inter, quarantine, report = run(tmp_path, path=folder)
    assert len(inter) == 120
    assert report["items"] == 110 and report["users"] == 90
    assert reasons(quarantine) == sorted([
        ("items", "non-numeric item_id", "17x|Fake (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 19)),
        ("users", "wrong number of fields", "944|24|M|technician"),
        ("interactions", "wrong number of fields", "196\t242\t3"),
        ("interactions", "non-numeric user_id", "x7\t242\t3\t881250949"),
        ("interactions", "non-numeric rating", "196\t242\tfive\t881250949"),
        ("interactions", "non-numeric timestamp", "196\t242\t3\tyesterday"),
        ("interactions", "undecodable bytes", "196\t24\\xff\t3\t881250949"),
        ("interactions", "wrong number of fields", "196\t242\t3\t881250949\t1"),
    ])
    assert report["quarantined"] == 8
    assert report["quarantined_by_reason"]["interactions: wrong number of fields"] == 2


def test_csv_bad_rows(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    ratings = (EMBEDDED / "ratings.csv").read_bytes().splitlines()[:41]
    bad = [b"1,1,4.0", b"1,3,4.0,964981247,7", b"1,\xe9\xff,4.0,964982224", b"1,6,four,964982224",
           b"1,47,,964983815"]
    (folder / "ratings.csv").write_bytes(b"\n".join(ratings[:10] + bad + ratings[10:]) + b"\n")
    inter, quarantine, _ = run(tmp_path, path=folder, chunk_rows=8)
    assert len(inter) == 40
    assert inter["item_id"].tolist() == [r.split(b",")[1].decode() for r in ratings[1:]]
    assert reasons(quarantine) == sorted([
        ("interactions", "wrong number of fields", "1,1,4.0"),
        ("interactions", "wrong number of fields", "1,3,4.0,964981247,7"),
        ("interactions", "undecodable bytes", "1,\\xe9\\xff,4.0,964982224"),
        ("interactions", "non-numeric rating", "1,6,four,964982224"),
        ("interactions", "missing rating", "1,47,,964983815"),
    ])


def test_json_lines_bad_records_and_truncated_gz(tmp_path):
    folder = copy("amazon2018", tmp_path)
    reviews = folder / "Magazine_Subscriptions_5.json.gz"
    lines = gzip.decompress(reviews.read_bytes()).splitlines()
    bad = [b'{"overall": 5.0, "reviewerID": "A1", "asin"', b'{"overall": 5.0, "asin": "B00005N7P0", '
           b'"unixReviewTime": 1393372800}', b'{"overall": "five", "reviewerID": "A2", "asin": "B00005N7P0", '
           b'"unixReviewTime": 1393372800}', b'[1, 2]', b'{"reviewerID": "A3", "asin": "B00005N7P0", '
           b'"overall": 4.0, "unixReviewTime": 1393372800, "note": "\xff"}']
    data = gzip.compress(b"\n".join(bad + lines) + b"\n", mtime=0)
    cut = data[: len(data) * 2 // 3]
    reviews.write_bytes(cut)
    # What a reader can still get back: the complete lines before the damage.
    complete = zlib.decompressobj(31).decompress(cut).count(b"\n") - len(bad)
    inter, quarantine, report = run(tmp_path, source="amazon", path=folder)
    assert 0 < complete < len(lines) and len(inter) == complete
    assert [(t, r) for t, r, _ in reasons(quarantine)] == sorted([
        ("interactions", "invalid JSON"), ("interactions", "missing user_id"),
        ("interactions", "non-numeric rating"), ("interactions", "invalid record"),
        ("interactions", "undecodable bytes"), ("interactions", "truncated or corrupt compressed file")])
    assert quarantine.set_index("reason").loc["invalid JSON", "row"] == bad[0].decode()
    # The 11 items of the metadata, and the one without metadata if its reviews survived the damage.
    assert report["items"] == 11 + ("B000IMVNQU" in set(inter["item_id"]))


def test_s3rec_bad_line(tmp_path):
    folder = copy("s3rec", tmp_path)
    path = folder / "Beauty.txt"
    path.write_text(path.read_text() + "26 7 x12 9\n27\n")
    inter, quarantine, _ = run(tmp_path, source="s3rec", path=folder, dataset="Beauty")
    assert len(inter) == 263
    assert quarantine["row"].tolist() == ["26 7 x12 9", "27"]
    assert set(quarantine["reason"]) == {"not a line of integer ids `user item item ...`"}


def test_unisrec_history_disagreeing_with_train_is_quarantined(tmp_path):
    folder = copy("unisrec", tmp_path)
    path = folder / "Scientific.test.inter"
    text = path.read_text().replace("0\t0 1 2 3 4 5 6 7 8 9 10 11 12\t13", "0\t0 1 2 3 4 5 6 7 8 9 10 12 11\t13")
    path.write_text(text)
    inter, quarantine, _ = run(tmp_path, source="unisrec", path=folder)
    assert len(inter) == 93
    assert quarantine[["table", "reason"]].values.tolist() == [
        ["Scientific.test.inter", "history differs from the rebuilt sequence"]]


def test_missing_required_column(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    ratings = pd.read_csv(EMBEDDED / "ratings.csv", nrows=20).drop(columns="rating")
    ratings.to_csv(folder / "ratings.csv", index=False)
    with pytest.raises(RecloopError, match=r"ratings.csv has no column 'rating' \(its columns: userId, movieId, "
                                           r"timestamp\)"):
        ingest(IngestConfig(path=folder), tmp_path / "out", tmp_path / "reports")


def test_missing_generic_column(tmp_path):
    generic = GenericSource(interactions=Path("interactions.csv"), columns=GenericColumns(user_id="user"))
    with pytest.raises(RecloopError, match=r"interactions.csv has no column 'user', 'item_id', 'timestamp'"):
        ingest(IngestConfig(source="generic", path=FIXTURES / "generic", generic=generic), tmp_path / "o", tmp_path)


def test_missing_required_files(tmp_path):
    folder = copy("unisrec", tmp_path)
    (folder / "Scientific.test.inter").unlink()
    with pytest.raises(RecloopError, match=r"no UniSRec test split in .*unisrec: looked for Scientific.test.inter"):
        ingest(IngestConfig(source="unisrec", path=folder), tmp_path / "out", tmp_path / "reports")
    with pytest.raises(RecloopError, match=r"no MovieLens ratings in .*unisrec: looked for u.data"):
        ingest(IngestConfig(path=folder), tmp_path / "out", tmp_path / "reports")
    with pytest.raises(RecloopError, match=r"no Amazon review file in .*unisrec"):
        ingest(IngestConfig(source="amazon", path=folder), tmp_path / "out", tmp_path / "reports")


def test_nothing_readable_is_an_error_and_keeps_previous_tables(tmp_path):
    out = tmp_path / "out"
    ingest(IngestConfig(path=FIXTURES / "ml-100k"), out, tmp_path / "reports")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "u.data").write_text("196 242 3 881250949\n186 302 3 891717742\n")
    with pytest.raises(RecloopError, match=r"no interaction could be read .*wrong number of fields \(2\)"):
        ingest(IngestConfig(path=folder), out, tmp_path / "reports")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
