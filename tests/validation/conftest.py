"""Canonical tables built from the embedded MovieLens latest-small, the way ingest writes them."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from components.config import ValidateConfig

ML = Path(__file__).resolve().parents[2] / "data" / "raw" / "ml-latest-small"
# The first 1,500 ratings: 15 users, 1,044 movies.
SLICE = 1500


@pytest.fixture(scope="session")
def movielens() -> dict[str, pd.DataFrame]:
    ratings = pd.read_csv(ML / "ratings.csv")
    movies = pd.read_csv(ML / "movies.csv")
    interactions = pd.DataFrame({
        "user_id": ratings["userId"].astype(str),
        "item_id": ratings["movieId"].astype(str),
        "timestamp": ratings["timestamp"].astype("int64"),
        "event": "rate",
        "value": ratings["rating"].astype(float),
        "domain": "movies",
    })
    items = pd.DataFrame({
        "item_id": movies["movieId"].astype(str),
        "title": movies["title"],
        "text": "",
        "categories": movies["genres"].str.split("|"),
        "domain": "movies",
    })
    users = pd.DataFrame({"user_id": interactions["user_id"].drop_duplicates().reset_index(drop=True)})
    return {"interactions": interactions, "items": items, "users": users}


def take_slice(movielens: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    interactions = movielens["interactions"].iloc[:SLICE].copy()
    users = pd.DataFrame({"user_id": interactions["user_id"].drop_duplicates().reset_index(drop=True)})
    return {"interactions": interactions, "items": movielens["items"].copy(), "users": users}


@pytest.fixture
def ml_slice(movielens) -> dict[str, pd.DataFrame]:
    """A fresh, small copy to corrupt: the first ratings, their users, the whole catalog."""
    return take_slice(movielens)


@pytest.fixture(scope="session")
def ml_slice_factory(movielens) -> Callable[[], dict[str, pd.DataFrame]]:
    """For module-scoped fixtures: makes fresh slices."""
    return lambda: take_slice(movielens)


@pytest.fixture(scope="session")
def write_canonical() -> Callable[..., Path]:
    """A function writing canonical tables (and optionally ingest's quarantine) into a folder."""

    def write(folder: Path, tables: dict[str, pd.DataFrame], quarantine: pd.DataFrame | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        if quarantine is not None:
            quarantine.to_parquet(folder / "quarantine.parquet", index=False)
        return folder

    return write


@pytest.fixture(scope="session")
def cfg() -> ValidateConfig:
    """The MovieLens settings of params.yaml, with floors a 1,500-row slice can meet."""
    return ValidateConfig(min_value=0.5, max_value=5.0, min_timestamp=788918400, max_timestamp=None,
                          max_quarantine_fraction=0.2, min_interactions=100, min_users=5, min_items=50)


@pytest.fixture(scope="session")
def gx_project(tmp_path_factory) -> Path:
    """One GX project for the session's validate runs, as the repository's gx/ is for every run there."""
    return tmp_path_factory.mktemp("gx-project") / "gx"
