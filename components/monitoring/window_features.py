"""Window features for the drift report: one row per interaction, the same columns on both sides.

A window is a table of canonical interactions: the reference (what the champion was trained on)
or the current one (a live batch). Each interaction becomes:

  event, value      the event and rating mix; `value` is categorical when both sides together take
                    few distinct values (star ratings), numerical otherwise (watch time, prices)
  hour, weekday     time of day and day of the week, UTC
  user_activity     log1p of the interactions per active day of the row's user, within its own
                    window: per day, so that a long reference and a short live window compare fairly
  item_popularity   log1p of the row's item's count among the reference interactions; a reference
                    row counts the *other* reference rows, so both sides are measured out of sample
  unseen_user       1.0 when the user has no reference interaction (always 0.0 in the reference)
  unseen_item       1.0 when the item has no reference interaction
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.schema import INTERACTION_COLUMNS
from components.errors import RecloopError

SECONDS_PER_DAY = 86_400
# Above this many distinct values `value` is a measurement, not a rating scale.
MAX_VALUE_LEVELS = 20
CATEGORICAL = ["event", "value", "hour", "weekday"]
NUMERICAL = ["user_activity", "item_popularity"]
UNSEEN = ["unseen_user", "unseen_item"]


@dataclass
class WindowInfo:
    """What a window holds and the stretch of time it covers (None bounds for an empty window)."""

    interactions: int
    users: int
    items: int
    start_ts: int | None
    end_ts: int | None
    start: str | None
    end: str | None


@dataclass
class WindowFeatures:
    """Reference and current feature tables, and which columns Evidently should read as which type."""

    reference: pd.DataFrame
    current: pd.DataFrame
    categorical: list[str]
    numerical: list[str]


def check_interactions(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The canonical interaction columns, typed; a RecloopError names what is missing."""
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns and c != "domain"]
    if missing:
        raise RecloopError(f"{name} lacks the interaction columns {', '.join(missing)}: "
                           "pass a canonical interactions table (recloop split writes them)")
    return frame.astype({"user_id": str, "item_id": str, "timestamp": "int64", "event": str, "value": "float64"})


def window_info(frame: pd.DataFrame) -> WindowInfo:
    if frame.empty:
        return WindowInfo(0, 0, 0, None, None, None, None)
    start, end = int(frame["timestamp"].min()), int(frame["timestamp"].max())
    return WindowInfo(len(frame), int(frame["user_id"].nunique()), int(frame["item_id"].nunique()),
                      start, end, _iso(start), _iso(end))


def _iso(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def _user_activity(frame: pd.DataFrame) -> np.ndarray:
    day = frame["timestamp"].to_numpy() // SECONDS_PER_DAY
    per_user = pd.DataFrame({"user": frame["user_id"].to_numpy(), "day": day}).groupby("user")["day"]
    rate = per_user.size() / per_user.nunique()
    return np.log1p(frame["user_id"].map(rate).to_numpy(dtype=np.float64))


def _features(frame: pd.DataFrame, item_counts: pd.Series, known_users: pd.Index, is_reference: bool) -> pd.DataFrame:
    ts = frame["timestamp"].to_numpy()
    counts = frame["item_id"].map(item_counts).fillna(0).to_numpy(dtype=np.float64)
    return pd.DataFrame({
        "event": frame["event"].to_numpy(),
        "value": frame["value"].to_numpy(),
        "hour": (ts % SECONDS_PER_DAY) // 3600,
        # 1970-01-01 was a Thursday: shift by 3 so that Monday is 0.
        "weekday": (ts // SECONDS_PER_DAY + 3) % 7,
        "user_activity": _user_activity(frame),
        "item_popularity": np.log1p(counts - 1 if is_reference else counts),
        "unseen_user": (~frame["user_id"].isin(known_users)).to_numpy(dtype=np.float64),
        "unseen_item": (counts == 0).astype(np.float64),
    })


def window_features(reference: pd.DataFrame, current: pd.DataFrame) -> WindowFeatures:
    """Feature tables for both windows (columns as in the module docstring), in the windows' row order."""
    item_counts = reference["item_id"].value_counts()
    known_users = pd.Index(reference["user_id"].unique())
    ref = _features(reference, item_counts, known_users, is_reference=True)
    cur = _features(current, item_counts, known_users, is_reference=False)
    categorical, numerical = list(CATEGORICAL), NUMERICAL + UNSEEN
    if pd.concat([ref["value"], cur["value"]]).nunique() > MAX_VALUE_LEVELS:
        categorical.remove("value")
        numerical.insert(0, "value")
    # Evidently counts categories by their text: "4.5" stars, "13" o'clock.
    for table in (ref, cur):
        for column in categorical:
            table[column] = table[column].astype(str)
    return WindowFeatures(ref, cur, categorical, numerical)
