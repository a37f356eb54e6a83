"""Shared data for the evaluation tests: a leave-one-out split of real MovieLens ratings, and text vectors.

Kept small so every test file runs in seconds: users 1-300 of ml-latest-small and the 400 movies
they rated most (about 25K ratings), split by time per user (last rating test, second-last valid).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.data.dataset import SplitData

ML_SMALL = Path(__file__).resolve().parents[2] / "data" / "raw" / "ml-latest-small"


def leave_one_out(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per user by time: the last interaction is test, the one before valid, the rest train."""
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    return ordered[from_end >= 2], ordered[from_end == 1], ordered[from_end == 0]


def movielens_frames(max_user: int = 300, top_items: int = 400) -> tuple[pd.DataFrame, ...]:
    ratings = pd.read_csv(ML_SMALL / "ratings.csv")
    ratings = ratings[ratings["userId"] <= max_user]
    keep = ratings["movieId"].value_counts().index[:top_items]
    ratings = ratings[ratings["movieId"].isin(keep)]
    ratings = ratings[ratings.groupby("userId")["movieId"].transform("size") >= 5]
    interactions = pd.DataFrame({
        "user_id": ratings["userId"].astype(str), "item_id": ratings["movieId"].astype(str),
        "timestamp": ratings["timestamp"].astype("int64"), "event": "rate",
        "value": ratings["rating"].astype(float), "domain": "movies"})
    movies = pd.read_csv(ML_SMALL / "movies.csv")
    movies = movies[movies["movieId"].isin(keep)].sort_values("movieId")
    items = pd.DataFrame({"item_id": movies["movieId"].astype(str), "title": movies["title"], "text": "",
                          "categories": movies["genres"].str.split("|"), "domain": "movies"})
    users = pd.DataFrame({"user_id": sorted(interactions["user_id"].unique())})
    train, valid, test = leave_one_out(interactions)
    items["cold"] = ~items["item_id"].isin(train["item_id"])
    return items, users, train, valid, test


@pytest.fixture(scope="session")
def movielens() -> SplitData:
    return SplitData.from_frames(*movielens_frames())


@pytest.fixture(scope="session")
def item_text(movielens: SplitData) -> np.ndarray:
    """Real all-MiniLM-L6-v2 vectors of the items' titles and genres, aligned with movielens.items."""
    from components.features.text import compose_item_text, encode_texts

    return encode_texts(compose_item_text(movielens.items).tolist())


@dataclass
class FixedScores:
    """A recommender whose scores are a given (users, items) matrix: for hand-computed cases."""

    matrix: np.ndarray
    name: str = "fixed"

    def fit(self, data: SplitData) -> "FixedScores":
        return self

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> np.ndarray:
        return self.matrix[users].copy()


@pytest.fixture
def fixed_scores() -> type[FixedScores]:
    return FixedScores
