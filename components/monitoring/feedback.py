"""The serving feedback log as monitoring reads it: what was served, and what users did with it.

The log is the store the service writes (`components/serving/feedback.py`: the SQLite file
`serve.feedback_log`, or the PostgreSQL database `serve.feedback_store`, given as its postgresql://
URL), or a Parquet table with the same columns (`recloop feedback-rotate` archives). One row per
(request, item, event):

  request_id  str    one served list
  user_id     str
  item_id     str
  rank        int    1-based position in the served list (set on served rows)
  score       float  the retrieval score the item was served with
  like_prob   float  the like head's probability for it
  timestamp   int64  seconds
  event       str    impression, click, like, dislike, rating, purchase...
  value       float  the rating for `rating` events, else 1.0
  source      str    "server" for what the service served (event "impression"), "client" for
                     events users sent back

Prediction drift reads the served rows (score, like_prob, and the reference popularity of the
served items). Quality reads served lists against outcomes: a served item is relevant when a
client event for the same request and item is positive (click, like, purchase, add to cart) or
a rating at or above `labels.like_threshold`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.errors import RecloopError
from components.serving.feedback import POSITIVE_EVENTS, read_feedback
from components.serving.feedback_postgres import is_postgres

REQUIRED = ["request_id", "item_id", "rank", "score", "like_prob", "timestamp", "event", "value", "source"]


def read_feedback_log(path: Path | str) -> pd.DataFrame:
    """The log at `path` (the service's SQLite file or postgresql:// URL, or Parquet), checked and typed."""
    if is_postgres(path):
        frame = read_feedback(path)
    elif Path(path).suffix == ".parquet":
        if not Path(path).exists():
            raise RecloopError(f"feedback log {path} does not exist")
        frame = pd.read_parquet(path)
    else:
        frame = read_feedback(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise RecloopError(f"feedback log {path} lacks the columns {', '.join(missing)} "
                           "(see components/monitoring/feedback.py for what each holds)")
    return frame.astype({"request_id": str, "item_id": str, "timestamp": "int64", "event": str,
                         "score": "float64", "like_prob": "float64", "value": "float64", "source": str})


def served(log: pd.DataFrame) -> pd.DataFrame:
    """What the service served: one row per (request, item) with its rank, score and like_prob."""
    rows = log[(log["source"] == "server") & (log["event"] == "impression") & log["rank"].notna()]
    return rows.drop_duplicates(["request_id", "item_id"]).reset_index(drop=True)


def has_outcomes(log: pd.DataFrame) -> bool:
    return bool((log["source"] == "client").any())


def ranking_frame(log: pd.DataFrame, like_threshold: float, max_requests: int, seed: int) -> pd.DataFrame:
    """Served lists with a 0/1 `target` per item, for Evidently's recommendation metrics.

    Columns request_id, item_id, rank, target; at most `max_requests` lists (a seeded sample).
    """
    lists = served(log)[["request_id", "item_id", "rank"]].astype({"rank": "int64"})
    requests = lists["request_id"].unique()
    if len(requests) > max_requests:
        keep = np.random.default_rng(seed).choice(requests, max_requests, replace=False)
        lists = lists[lists["request_id"].isin(keep)]
    client = log[log["source"] == "client"]
    positive = client["event"].isin(POSITIVE_EVENTS) | ((client["event"] == "rating")
                                                        & (client["value"] >= like_threshold))
    liked = client.loc[positive, ["request_id", "item_id"]].drop_duplicates().assign(target=1)
    ranked = lists.merge(liked, on=["request_id", "item_id"], how="left")
    return ranked.assign(target=ranked["target"].fillna(0).astype("int64")).reset_index(drop=True)


def prediction_features(served_rows: pd.DataFrame, item_counts: pd.Series) -> pd.DataFrame:
    """score, like_prob and rec_popularity (log1p of the served item's reference count) per served row."""
    counts = served_rows["item_id"].map(item_counts).fillna(0).to_numpy(dtype=np.float64)
    return pd.DataFrame({"score": served_rows["score"].to_numpy(), "like_prob": served_rows["like_prob"].to_numpy(),
                         "rec_popularity": np.log1p(counts)})
