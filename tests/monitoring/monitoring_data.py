"""Helpers for the monitoring tests: MovieLens periods, Parquet writing, a replayed feedback log."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def years(ratings: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    year = pd.to_datetime(ratings["timestamp"], unit="s").dt.year
    return ratings[(year >= first) & (year <= last)].reset_index(drop=True)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def popularity_log(window: pd.DataFrame, train: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The feedback log a most-popular recommender trained on `train` would write serving `window`.

    One request per user of `window`, at their first interaction in it, serving the k items most
    rated in `train` (score: the item's share of `train`; like_prob: its mean rating / 5); then, as
    client events, the user's later ratings in `window` of the served items.
    """
    top = train["item_id"].value_counts().head(k)
    mean_rating = train.groupby("item_id")["value"].mean()
    first = window.groupby("user_id")["timestamp"].min()
    users = first.index.to_numpy()
    impressions = pd.DataFrame({
        "request_id": np.repeat("r" + users, k), "user_id": np.repeat(users, k),
        "item_id": np.tile(top.index.to_numpy(), len(users)), "rank": np.tile(np.arange(1, k + 1), len(users)),
        "score": np.tile(top.to_numpy() / len(train), len(users)),
        "like_prob": np.tile(mean_rating[top.index].to_numpy() / 5, len(users)),
        "timestamp": np.repeat(first.to_numpy(), k), "event": "impression", "value": np.nan, "source": "server"})
    rated = window[window["item_id"].isin(top.index)]
    rated = rated[rated["timestamp"] >= rated["user_id"].map(first)]
    outcomes = pd.DataFrame({
        "request_id": "r" + rated["user_id"], "user_id": rated["user_id"], "item_id": rated["item_id"],
        "rank": pd.NA, "score": np.nan, "like_prob": np.nan, "timestamp": rated["timestamp"],
        "event": "rating", "value": rated["value"], "source": "client"})
    log = pd.concat([impressions, outcomes], ignore_index=True)
    return log.astype({"rank": "Int64"}).sort_values("timestamp", kind="stable").reset_index(drop=True)


def release_years(movies_csv: Path) -> pd.Series:
    """Release year by item id, from the "(1998)" that ends MovieLens titles."""
    movies = pd.read_csv(movies_csv)
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0].astype("float64")
    return pd.Series(year.to_numpy(), index=movies["movieId"].astype(str))
