"""MovieLens (GroupLens): the 100K, 1M/10M and latest/20M/25M layouts, told apart by their file names.

- 100K: `u.data` (tab: user, item, rating, unix time), `u.item` (`|`, 19 genre flags), `u.user` (`|`).
- 1M/10M: `ratings.dat`, `movies.dat`, `users.dat` (1M only), `tags.dat` (10M only), `::`-separated.
- latest/20M/25M: `ratings.csv`, `movies.csv` (pipe-separated genres), `tags.csv`, with headers.
Ratings become event "rate" with the rating as value; genres become categories; the year in the title
becomes the attribute `year`; free-text tags are folded into each movie's `text`. The movie file is the
whole catalog: a rating of a movie it lacks is an unknown item (quarantined unless `ingest.unknown_items`).

`movielens_stream` reads a latest-layout release straight into memory as a replay of its history
(`recloop simulate`), without the ingest stage's files.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import IngestConfig, SimulateConfig
from components.data.live_windows import Stream, cutoff_seconds
from components.data.sources.cleaning import clean_interactions
from components.data.sources.readers import detect_encoding, read_csv, read_lines, split_fields
from components.data.sources.sink import SourceInfo, TableSink
from components.errors import RecloopError

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]
# users.dat of ML-1M stores occupations as codes; the names are those of its README.
OCCUPATIONS_1M = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin", "4": "college/grad student",
    "5": "customer service", "6": "doctor/health care", "7": "executive/managerial", "8": "farmer",
    "9": "homemaker", "10": "K-12 student", "11": "lawyer", "12": "programmer", "13": "retired",
    "14": "sales/marketing", "15": "scientist", "16": "self-employed", "17": "technician/engineer",
    "18": "tradesman/craftsman", "19": "unemployed", "20": "writer"}
NO_GENRE = "(no genres listed)"


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest the MovieLens release in the folder `cfg.path`."""
    folder = Path(cfg.path)
    if (folder / "u.data").is_file():
        return _read_100k(folder, cfg, sink)
    if (folder / "ratings.dat").is_file():
        return _read_dat(folder, cfg, sink)
    if (folder / "ratings.csv").is_file():
        return _read_csv(folder, cfg, sink)
    raise RecloopError(f"no MovieLens ratings in {folder}: looked for u.data (100K), ratings.dat (1M/10M) "
                       "and ratings.csv (latest/20M/25M)")


def _numeric_ids(frame: pd.DataFrame, column: str, *, sink: TableSink, table: str, sep: str) -> pd.DataFrame:
    """Keep rows whose `column` is an integer id (MovieLens ids are); quarantine the others."""
    frame = frame.assign(**{column: frame[column].str.strip()})
    bad = ~frame[column].str.fullmatch(r"\d+").to_numpy(dtype=bool)
    if bad.any():
        sink.quarantine(table, f"non-numeric {column}", [sep.join(r) for r in frame.loc[bad].itertuples(index=False)])
    return frame.loc[~bad].reset_index(drop=True)


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """One metadata table of Python str columns from its chunks."""
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(parts, ignore_index=True).astype(object)


def _ratings(chunks: Iterator[pd.DataFrame], sink: TableSink, sep: str) -> None:
    for raw in chunks:
        sink.interactions(clean_interactions(raw, sink=sink, table="interactions", sep=sep, event="rate",
                                             numeric_ids=True))


def _year(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce").astype("Int64")


def tag_text(tags: pd.DataFrame) -> pd.Series:
    """Each item's distinct tags, most frequent first (ties: the first used first), joined by ', '."""
    tags = tags.assign(tag=tags["tag"].str.strip(), order=np.arange(len(tags)))
    tags = tags[tags["tag"] != ""]
    counted = tags.groupby(["item_id", "tag"], sort=False)["order"].agg(["size", "min"]).reset_index()
    counted = counted.sort_values(["item_id", "size", "min"], ascending=[True, False, True])
    return counted.groupby("item_id", sort=False)["tag"].agg(", ".join)


def _items(movies: pd.DataFrame, categories: pd.Series, tags: pd.Series, **attributes: pd.Series) -> pd.DataFrame:
    """Movie rows (item_id, title, ...) plus a row for each tagged movie the movie file lacks."""
    items = pd.DataFrame({"item_id": movies["item_id"], "title": movies["title"].str.strip(),
                          "text": movies["item_id"].map(tags).fillna(""), "categories": categories,
                          "year": _year(movies["title"]), **attributes})
    extra = tags[~tags.index.isin(items["item_id"])]
    if len(extra):
        items = pd.concat([items, pd.DataFrame({"item_id": extra.index, "title": extra.index, "text": extra.values,
                                                "categories": [[] for _ in extra]})], ignore_index=True)
    return items


def _split_genres(genres: pd.Series, sep: str) -> pd.Series:
    return genres.str.split(sep, regex=False).map(lambda g: [x.strip() for x in g if x.strip() and x != NO_GENRE])


def _read_lines_table(path: Path, sep: str, names: list[str], cfg: IngestConfig, sink: TableSink, table: str,
                      encoding: str = "utf-8") -> pd.DataFrame:
    """A whole small metadata file as string columns (bad lines quarantined)."""
    parts = [split_fields(lines, sep, names, sink=sink, table=table)
             for lines in read_lines(path, sink=sink, table=table, chunk_rows=cfg.chunk_rows, encoding=encoding)]
    return _concat(parts, names)


def _read_100k(folder: Path, cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    names = ["user_id", "item_id", "value", "timestamp"]
    _ratings((split_fields(lines, "\t", names, sink=sink, table="interactions")
              for lines in read_lines(folder / "u.data", sink=sink, table="interactions", chunk_rows=cfg.chunk_rows)),
             sink, "\t")
    notes = []
    if (folder / "u.item").is_file():
        flags = [f"g{i}" for i in range(len(GENRES_100K))]
        movies = _read_lines_table(folder / "u.item", "|", ["item_id", "title", "release", "video", "url", *flags],
                                   cfg, sink, "items", encoding=detect_encoding(folder / "u.item"))
        movies = _numeric_ids(movies, "item_id", sink=sink, table="items", sep="|")
        has_genre = movies[flags].to_numpy() == "1"
        genres = np.array(GENRES_100K, dtype=object)
        categories = pd.Series([list(genres[row]) for row in has_genre], index=movies.index, dtype=object)
        release = pd.to_datetime(movies["release"], format="%d-%b-%Y", errors="coerce").dt.strftime("%Y-%m-%d")
        sink.items(_items(movies, categories, pd.Series(dtype=object), release_date=release))
    else:
        notes.append("u.item is missing: item titles are the ids.")
    if (folder / "u.user").is_file():
        users = _read_lines_table(folder / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"],
                                  cfg, sink, "users", encoding=detect_encoding(folder / "u.user"))
        users = _numeric_ids(users, "user_id", sink=sink, table="users", sep="|")
        sink.users(users.assign(age=pd.to_numeric(users["age"], errors="coerce").astype("Int64")))
    return SourceInfo(dataset=folder.name, notes=notes, complete_catalog=(folder / "u.item").is_file())


def _read_dat(folder: Path, cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    names = ["user_id", "item_id", "value", "timestamp"]
    _ratings((split_fields(lines, "::", names, sink=sink, table="interactions")
              for lines in read_lines(folder / "ratings.dat", sink=sink, table="interactions",
                                      chunk_rows=cfg.chunk_rows)), sink, "::")
    counts, notes = {}, []
    tags = pd.Series(dtype=object)
    if (folder / "tags.dat").is_file():
        raw = _read_lines_table(folder / "tags.dat", "::", ["user_id", "item_id", "tag", "timestamp"], cfg, sink,
                                "tags", encoding=detect_encoding(folder / "tags.dat"))
        raw = _numeric_ids(raw, "item_id", sink=sink, table="tags", sep="::")
        counts["tags"] = len(raw)
        tags = tag_text(raw)
    if (folder / "movies.dat").is_file():
        movies = _read_lines_table(folder / "movies.dat", "::", ["item_id", "title", "genres"], cfg, sink, "items",
                                   encoding=detect_encoding(folder / "movies.dat"))
        movies = _numeric_ids(movies, "item_id", sink=sink, table="items", sep="::")
        sink.items(_items(movies, _split_genres(movies["genres"], "|"), tags))
    else:
        notes.append("movies.dat is missing: item titles are the ids.")
    if (folder / "users.dat").is_file():
        users = _read_lines_table(folder / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"],
                                  cfg, sink, "users", encoding=detect_encoding(folder / "users.dat"))
        users = _numeric_ids(users, "user_id", sink=sink, table="users", sep="::")
        sink.users(users.assign(age=pd.to_numeric(users["age"], errors="coerce").astype("Int64"),
                                occupation=users["occupation"].map(OCCUPATIONS_1M).fillna(users["occupation"])))
    return SourceInfo(dataset=folder.name, notes=notes, counts=counts,
                      complete_catalog=(folder / "movies.dat").is_file())


def _read_csv(folder: Path, cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    renames = {"userId": "user_id", "movieId": "item_id", "rating": "value"}
    _ratings((raw.rename(columns=renames) for raw in read_csv(
        folder / "ratings.csv", ["userId", "movieId", "rating", "timestamp"], sink=sink, table="interactions",
        chunk_rows=cfg.chunk_rows)), sink, ",")
    counts, notes = {}, []
    tags = pd.Series(dtype=object)
    if (folder / "tags.csv").is_file():
        parts = [_numeric_ids(raw.rename(columns=renames), "item_id", sink=sink, table="tags", sep=",")
                 for raw in read_csv(folder / "tags.csv", ["userId", "movieId", "tag"], sink=sink, table="tags",
                                     chunk_rows=cfg.chunk_rows)]
        raw = _concat(parts, ["item_id", "tag"])
        counts["tags"] = len(raw)
        tags = tag_text(raw[["item_id", "tag"]])
    if (folder / "movies.csv").is_file():
        parts = [_numeric_ids(raw.rename(columns=renames), "item_id", sink=sink, table="items", sep=",")
                 for raw in read_csv(folder / "movies.csv", ["movieId", "title", "genres"], sink=sink,
                                     table="items", chunk_rows=cfg.chunk_rows)]
        movies = _concat(parts, ["item_id", "title", "genres"])
        sink.items(_items(movies, _split_genres(movies["genres"], "|"), tags))
    else:
        notes.append("movies.csv is missing: item titles are the ids.")
    return SourceInfo(dataset=folder.name, notes=notes, counts=counts,
                      complete_catalog=(folder / "movies.csv").is_file())


def movielens_stream(path: Path, cfg: SimulateConfig) -> tuple[Stream, pd.DataFrame]:
    """The ratings of the latest-layout release in `path` as a stream cut at `cfg.cutoff`, and its movies
    as the catalog (title and genres)."""
    path = Path(path)
    if not (path / "ratings.csv").exists():
        raise RecloopError(f"{path} holds no MovieLens ratings.csv: point ingest.path at ml-latest-small")
    raw = pd.read_csv(path / "ratings.csv")
    interactions = pd.DataFrame({"user_id": raw["userId"].astype(str), "item_id": raw["movieId"].astype(str),
                                 "timestamp": raw["timestamp"].astype("int64"), "event": "rate",
                                 "value": raw["rating"].astype(float), "domain": "movies"})
    movies = pd.read_csv(path / "movies.csv")
    catalog = pd.DataFrame({"item_id": movies["movieId"].astype(str), "title": movies["title"], "text": "",
                            "categories": movies["genres"].str.split("|"), "domain": "movies"})
    return Stream(interactions, cutoff_seconds(cfg.cutoff), cfg.window_days), catalog
