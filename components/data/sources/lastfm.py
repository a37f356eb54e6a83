"""HetRec 2011 Last.fm 2K (GroupLens): which artists each user listened to, how often, and the artists' names.

- `user_artists.dat`: tab-separated, header `userID artistID weight`; weight is the user's listen count
  of the artist, a total over their history. Each (user, artist) pair is one interaction, event `listen`,
  value the listen count. It is not a rating (`rate` events feed the like and rating heads), so the
  heads get no labels from it; the sequence encoder reads it as a bucketed value, as other sources' ratings.
- `artists.dat`: `id name url pictureURL`; the name is the item's title, its only text. It is the whole
  catalog: a listen of an artist it lacks is an unknown item (quarantined unless `ingest.unknown_items`).
- `tags.dat` and `user_friends.dat` are not read: without `user_taggedartists.dat` a tag names no artist,
  and the canonical tables have no place for a social graph.

No timestamps: the timestamped tagging files are absent from the snapshot, and listen counts are totals.
Each user's artists are put in a seeded random order (`ingest.order_seed`): a keyed hash of (user, artist)
ranks them, whatever the file's row order, and the rank is a synthetic timestamp in seconds from
1970-01-01 (set `validate.min_timestamp=0`). Leave-one-out by time on it is a seeded random hold-out per
user (one artist test, one valid), the protocol KG papers use on this dataset (MKR, KGAT split at random).

Quarantined, with the reason: lines with the wrong number of fields or undecodable bytes (interactions),
ids that are not integers, listen counts that are not positive integers, a repeated (user, artist) pair
(the first is kept). Artist lines that are not utf-8 are read as ISO-8859-1 (the HetRec files mix both)
and counted in the report as `artists_latin1`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from components.config import IngestConfig
from components.data.sources.cleaning import clean_interactions
from components.data.sources.readers import csv_header, find_file, read_lines, split_fields
from components.data.sources.sink import SourceInfo, TableSink
from components.errors import RecloopError

LISTENS = "user_artists.dat"
ARTISTS = "artists.dat"
LISTEN_HEADER = ["userID", "artistID", "weight"]
ARTIST_HEADER = ["id", "name", "url", "pictureURL"]
EVENT = "listen"
NOT_A_COUNT = "listen count not a positive integer"
REPEATED_PAIR = "repeated user-artist pair"


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest the HetRec Last.fm release in the folder `cfg.path`."""
    folder = Path(cfg.path)
    listens = find_file(folder, [LISTENS], "HetRec Last.fm listens")
    _check_header(listens, LISTEN_HEADER)
    pairs = _listens(listens, cfg, sink)
    pairs["timestamp"] = synthetic_order(pairs["user_id"], pairs["item_id"], cfg.order_seed)
    sink.interactions(clean_interactions(pairs, sink=sink, table="interactions", sep="\t", event=EVENT))
    info = SourceInfo(dataset=folder.name, synthetic_timestamps=True, notes=[
        f"timestamps are synthetic: each user's artists in a random order seeded by ingest.order_seed="
        f"{cfg.order_seed}, as seconds from 1970-01-01 (HetRec Last.fm has no listening times; set "
        "validate.min_timestamp=0); leave-one-out on it is a random hold-out per user.",
        "value is the listen count (event listen), not a rating."])
    if not (folder / ARTISTS).is_file():
        info.notes.append(f"{ARTISTS} is missing: item titles are the artist ids.")
        return info
    _check_header(folder / ARTISTS, ARTIST_HEADER)
    artists, latin1 = _artists(folder / ARTISTS, sink)
    sink.items(artists)
    info.counts["artists_latin1"] = latin1
    info.complete_catalog = True
    return info


def synthetic_order(user: pd.Series, item: pd.Series, seed: int) -> np.ndarray:
    """Each row's position (0 = first) among its user's rows in a random order seeded by `seed`.

    A keyed hash of (user, item) sorts each user's items, so the order depends on the pairs and the
    seed only, not on the rows' order in the file; pairs must be unique.
    """
    key = str(seed).encode()
    draws = np.fromiter((int.from_bytes(hashlib.blake2b(f"{u}\t{i}".encode(), digest_size=8, key=key).digest(),
                                        "big") for u, i in zip(user, item)), dtype=np.uint64, count=len(user))
    users = pd.factorize(user)[0]
    order = np.lexsort((draws, users))  # by user, then by draw
    position = np.empty(len(order), dtype=np.int64)
    position[order] = pd.Series(users[order]).groupby(users[order]).cumcount().to_numpy()
    return position


def _check_header(path: Path, expected: list[str]) -> None:
    """The columns are read by position, so the header must be HetRec's, in its order."""
    first = [name.strip() for name in csv_header(path, "\t")]
    if first != expected:
        raise RecloopError(f"{path} should start with the header {' '.join(expected)} (HetRec Last.fm), "
                           f"found {' '.join(first)!r}")


def _listens(path: Path, cfg: IngestConfig, sink: TableSink) -> pd.DataFrame:
    """Every (user, artist, count) row that parses, each pair once; the rest quarantined with why."""
    names = ["user_id", "item_id", "value"]
    parts = [split_fields(lines, "\t", names, sink=sink, table="interactions")
             for lines in read_lines(path, sink=sink, table="interactions", chunk_rows=cfg.chunk_rows,
                                     skip_header=True)]
    frame = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)).astype(object)
    frame = frame.apply(lambda c: c.str.strip())
    # Checked here, before the synthetic time is added, so that the quarantine keeps the original line.
    for column, pattern, reason in (("user_id", r"\d+", "non-numeric user_id"),
                                    ("item_id", r"\d+", "non-numeric item_id"), ("value", r"0*[1-9]\d*", NOT_A_COUNT)):
        bad = ~frame[column].str.fullmatch(pattern).fillna(False).to_numpy(bool)
        sink.quarantine("interactions", reason, _lines(frame.loc[bad]))
        frame = frame.loc[~bad].reset_index(drop=True)
    repeated = frame.duplicated(["user_id", "item_id"]).to_numpy()
    sink.quarantine("interactions", REPEATED_PAIR, _lines(frame.loc[repeated]))
    return frame.loc[~repeated].reset_index(drop=True)


def _lines(frame: pd.DataFrame) -> list[str]:
    """Rows as their tab-separated text, for the quarantine."""
    return ["\t".join(row) for row in frame.itertuples(index=False)]


def _artists(path: Path, sink: TableSink) -> tuple[pd.DataFrame, int]:
    """Artist rows (item_id, title) and how many lines were decoded as ISO-8859-1."""
    lines, latin1 = [], 0
    for raw in path.read_bytes().splitlines()[1:]:
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
            latin1 += 1
    lines = [line for line in lines if line.strip()]
    fields = split_fields(pa.array(lines, type=pa.string()), "\t", ["item_id", "title", "url", "picture"],
                          sink=sink, table="items")
    fields = fields.astype(object).assign(item_id=lambda f: f["item_id"].str.strip())
    bad = ~fields["item_id"].str.fullmatch(r"\d+").to_numpy(bool)
    sink.quarantine("items", "non-numeric item_id", _lines(fields.loc[bad]))
    fields = fields.loc[~bad]
    items = pd.DataFrame({"item_id": fields["item_id"], "title": fields["title"].str.strip(), "text": "",
                          "categories": [[] for _ in range(len(fields))]})
    return items.reset_index(drop=True), latin1
