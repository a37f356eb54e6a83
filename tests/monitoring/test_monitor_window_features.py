"""Window features on real MovieLens rows, checked against pandas and hand counts."""
from __future__ import annotations

import numpy as np
import pandas as pd

from components.monitoring.window_features import MAX_VALUE_LEVELS, window_features, window_info


def test_hour_and_weekday_agree_with_pandas(late: pd.DataFrame) -> None:
    features = window_features(late, late).current
    stamps = pd.to_datetime(late["timestamp"], unit="s")
    assert (features["hour"] == stamps.dt.hour.astype(str)).all()
    assert (features["weekday"] == stamps.dt.dayofweek.astype(str)).all()


def test_item_popularity_counts_reference_rows_out_of_sample(early: pd.DataFrame) -> None:
    counts = early["item_id"].value_counts()
    once, often = counts[counts == 1].index[0], counts.index[0]
    current = early[early["item_id"].isin([once, often])]
    features = window_features(early, current)
    ref_pop = features.reference["item_popularity"][early["item_id"] == once]
    cur_pop = features.current["item_popularity"].to_numpy()
    # A reference row never counts itself: an item rated once is unknown to its own row.
    assert ref_pop.tolist() == [0.0]
    expected = np.log1p(current["item_id"].map(counts).to_numpy(dtype=float))
    assert np.allclose(cur_pop, expected)
    assert cur_pop.max() == np.log1p(counts[often])


def test_unseen_users_and_items_are_flagged_in_the_current_window_only(early: pd.DataFrame,
                                                                        late: pd.DataFrame) -> None:
    features = window_features(early, late)
    assert features.reference[["unseen_user", "unseen_item"]].to_numpy().sum() == 0
    new_item = ~late["item_id"].isin(early["item_id"])
    new_user = ~late["user_id"].isin(early["user_id"])
    assert (features.current["unseen_item"].to_numpy() == new_item.to_numpy()).all()
    assert (features.current["unseen_user"].to_numpy() == new_user.to_numpy()).all()
    assert 0 < new_item.mean() < 1


def test_user_activity_is_interactions_per_active_day(late: pd.DataFrame) -> None:
    user = late["user_id"].iloc[0]
    rows = late[late["user_id"] == user]
    per_day = len(rows) / (rows["timestamp"] // 86_400).nunique()
    activity = window_features(late, late).current["user_activity"][late["user_id"] == user]
    assert np.allclose(activity, np.log1p(per_day))


def test_star_ratings_are_categories_and_measurements_are_numbers(late: pd.DataFrame) -> None:
    stars = window_features(late, late)
    assert "value" in stars.categorical and set(stars.current["value"]) >= {"0.5", "3.5", "5.0"}
    # Many distinct values (a watch time, a price) make `value` a numerical column instead.
    measured = late.assign(value=late["timestamp"] % (MAX_VALUE_LEVELS * 10) / 7.0)
    numbers = window_features(measured, measured)
    assert "value" in numbers.numerical and numbers.current["value"].dtype == np.float64


def test_window_info_bounds(late: pd.DataFrame) -> None:
    info = window_info(late)
    assert (info.interactions, info.users) == (len(late), late["user_id"].nunique())
    assert info.start.startswith("2015-01-01") and info.end.startswith("2018-")
    assert window_info(late.iloc[:0]).start_ts is None
