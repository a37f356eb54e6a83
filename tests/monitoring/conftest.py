"""Real data for the monitoring tests: windows of the embedded MovieLens ratings and real MiniLM
text vectors of 250 of their movies (tests/fixtures/monitoring)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_data import write, years

from components.config import MonitorConfig
from components.monitoring.monitor import MonitorSummary, monitor

ROOT = Path(__file__).resolve().parents[2]
RATINGS = ROOT / "data/raw/ml-latest-small/ratings.csv"
VECTORS = ROOT / "tests/fixtures/monitoring/ml-latest-small-text.npz"


@pytest.fixture(scope="session")
def ratings() -> pd.DataFrame:
    """ml-latest-small ratings as canonical interactions."""
    raw = pd.read_csv(RATINGS)
    return pd.DataFrame({"user_id": raw["userId"].astype(str), "item_id": raw["movieId"].astype(str),
                         "timestamp": raw["timestamp"].astype("int64"), "event": "rate",
                         "value": raw["rating"].astype("float64"), "domain": "movies"})


@pytest.fixture(scope="session")
def early(ratings: pd.DataFrame) -> pd.DataFrame:
    """1996-2000: whole-star ratings, the catalog of the late 1990s."""
    return years(ratings, 1996, 2000)


@pytest.fixture(scope="session")
def late(ratings: pd.DataFrame) -> pd.DataFrame:
    """2015-2018: half-star ratings, a catalog that moved on."""
    return years(ratings, 2015, 2018)


@pytest.fixture(scope="session")
def item_vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture's vectors as the featurize stage writes them: item_text.npy + the items table."""
    folder = tmp_path_factory.mktemp("features")
    with np.load(VECTORS) as f:
        np.save(folder / "item_text.npy", f["vectors"].astype(np.float32))
        write(pd.DataFrame({"item_id": f["item_id"].astype(str)}), folder / "items.parquet")
    return {"item_vectors": folder / "item_text.npy", "items": folder / "items.parquet"}


@pytest.fixture
def cfg(tmp_path: Path) -> MonitorConfig:
    return MonitorConfig(workspace=tmp_path / "evidently_workspace")


@pytest.fixture(scope="session")
def shift(tmp_path_factory: pytest.TempPathFactory, early: pd.DataFrame, late: pd.DataFrame,
          item_vectors: dict[str, Path]) -> tuple[MonitorConfig, Path, MonitorSummary]:
    """One run: 1996-2000 (whole stars, the 90s catalog) as reference, 2015-2018 as current."""
    folder = tmp_path_factory.mktemp("shift")
    cfg = MonitorConfig(workspace=folder / "evidently_workspace")
    summary = monitor(cfg, write(early, folder / "early.parquet"), write(late, folder / "late.parquet"),
                      folder / "reports", **item_vectors)
    return cfg, folder, summary
