"""Real data for the continual tests: MovieLens latest-small ratings of the 250 movies whose real
all-MiniLM-L6-v2 vectors tests/fixtures/monitoring holds (popular in 1996-2000 and in 2015-2018),
history up to 2015 and the yearly windows after it."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import ContinualConfig, FinetuneConfig, ModelConfig
from components.continual.window_split import grow_ids, grow_items, leave_last_out
from components.data.dataset import SplitData
from components.models.artifacts import TrainedModel

ROOT = Path(__file__).resolve().parents[2]
ML_SMALL = ROOT / "data" / "raw" / "ml-latest-small"
VECTORS = ROOT / "tests" / "fixtures" / "monitoring" / "ml-latest-small-text.npz"
CUTOFF = pd.Timestamp("2015-01-01", tz="UTC").value // 10**9
YEAR = 365 * 86_400

TINY_MODEL = ModelConfig(dim=32, layers=1, heads=2, dropout=0.2, max_len=20, text_hidden=64)
TINY_FINETUNE = FinetuneConfig(epochs=3, batch_size=64, lr=3e-3, patience=3, threads=2, windows="last")
CONTINUAL = ContinualConfig(epochs=3, lr_scale=1.0, replay_ratio=1.0, max_guard_users=None)


@functools.cache
def interactions() -> pd.DataFrame:
    raw = pd.read_csv(ML_SMALL / "ratings.csv")
    raw = raw[raw["movieId"].astype(str).isin(_vectors())]
    return pd.DataFrame({"user_id": raw["userId"].astype(str), "item_id": raw["movieId"].astype(str),
                         "timestamp": raw["timestamp"].astype("int64"), "event": "rate",
                         "value": raw["rating"].astype(float), "domain": "movies"}).reset_index(drop=True)


@functools.cache
def movies() -> pd.DataFrame:
    raw = pd.read_csv(ML_SMALL / "movies.csv")
    return pd.DataFrame({"item_id": raw["movieId"].astype(str), "title": raw["title"], "text": "",
                         "categories": raw["genres"].str.split("|"), "domain": "movies"})


def window(k: int) -> pd.DataFrame:
    ts = interactions()["timestamp"]
    return interactions()[(ts >= CUTOFF + k * YEAR) & (ts < CUTOFF + (k + 1) * YEAR)]


@functools.cache
def base() -> SplitData:
    past = interactions()[interactions()["timestamp"] < CUTOFF]
    return leave_last_out(grow_items(movies().iloc[:0], movies(), grow_ids([], past["item_id"])), past)


@functools.cache
def _vectors() -> dict[str, np.ndarray]:
    with np.load(VECTORS) as f:
        return dict(zip(f["item_id"].astype(str), f["vectors"].astype(np.float32)))


def text(items: pd.DataFrame) -> np.ndarray:
    """Text vectors aligned with `items` rows."""
    vectors = _vectors()
    return np.stack([vectors[i] for i in items["item_id"]]).astype(np.float32)


@functools.cache
def champion() -> TrainedModel:
    from components.training.finetune import finetune_model

    trained, _ = finetune_model(base(), text(base().items), TINY_FINETUNE, 0, pretrained=None, knobs=TINY_MODEL)
    return trained


def history(data: SplitData) -> pd.DataFrame:
    """Every interaction of a split, as canonical rows."""
    return pd.concat([data.train, data.valid, data.test], ignore_index=True).drop(columns=["user_idx", "item_idx"])


@functools.cache
def weak_champion() -> TrainedModel:
    """A champion from a short, slow first training: one a fine-tuned challenger clearly beats."""
    from components.training.finetune import finetune_model

    short = TINY_FINETUNE.model_copy(update={"epochs": 1, "lr": 3e-4})
    trained, _ = finetune_model(base(), text(base().items), short, 0, pretrained=None, knobs=TINY_MODEL)
    return trained


def served_log(path: Path, champion: TrainedModel, epsilon: float = 0.3) -> int:
    """A real feedback log of window 0 at `path`: `champion`'s lists served with epsilon-greedy (the
    replay simulator's requests, clicks from the users' real later ratings), written by the service's
    SQLite writer with their propensities. Returns the clicks."""
    from components.config import ExplorationConfig, ReplayConfig
    from components.continual.policy_replay import serve, window_requests
    from components.policy.ope import position_weights
    from components.serving.feedback import FeedbackLog

    cfg = ReplayConfig(windows=1, requests_per_user=5, k=5, candidates=20, position_bias=0.0)
    data = base()
    w = window_requests(champion, data.items, movies(), history(data), window(0), data.users, text, cfg, 0, 0)
    served = serve(w.requests, ExplorationConfig(kind="epsilon", epsilon=epsilon), cfg, position_weights(5, "rate"), 0)
    ids = w.opened.data.items["item_id"].astype(str).to_numpy()
    rows = []
    for slot in served.log.itertuples(index=False):
        shown = {"request_id": slot.request_id, "user_id": str(slot.user_id), "item_id": ids[slot.item_idx],
                 "timestamp": int(slot.timestamp)}
        rows.append({**shown, "rank": int(slot.position) + 1, "score": float(slot.score), "event": "impression",
                     "value": 1.0, "source": "server", "propensity": float(slot.propensity)})
        if slot.reward > 0:
            rows.append({**shown, "timestamp": int(slot.timestamp) + 60, "event": "click", "value": 1.0,
                         "source": "client"})
    path.parent.mkdir(parents=True, exist_ok=True)
    log = FeedbackLog(path).open()
    log.append(rows)
    log.close()
    return int(served.log["reward"].sum())
