"""Prequential evaluation: each target is ranked from its user's strictly earlier history, against
hand-computed ranks; the bootstrap resamples users, not targets."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.data.dataset import SplitData
from components.evaluation.baselines import MostPopular
from components.evaluation.prequential import bootstrap_se, prequential_split, score


def _rows(user: str, pairs: list[tuple[str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user, "item_id": [i for i, _ in pairs], "timestamp": [t for _, t in pairs],
                         "event": "rate", "value": 4.0})


@pytest.fixture
def toy() -> SplitData:
    """u0 and u1 have targets; u2 only shapes popularity: i4 5, i3 4, i2 3, i1 2, i0 1."""
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(5)]})
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"]})
    train = pd.concat([_rows("u0", [("i0", 1), ("i1", 2)]),
                       _rows("u2", [("i4", 1)] * 5 + [("i3", 1)] * 4 + [("i2", 1)] * 3 + [("i1", 1)])])
    valid = _rows("u1", [("i1", 1)])
    # u0's i2 shares a second with i1: i1 is not in its history. u0's i3 comes after i2: i2 is.
    test = pd.concat([_rows("u0", [("i2", 2), ("i3", 3)]), _rows("u1", [("i4", 5)])])
    return SplitData.from_frames(items, users, train, valid, test)


def test_each_target_sees_only_its_users_earlier_interactions(toy):
    split = prequential_split(toy)
    assert split.user_of.tolist() == [0, 0, 1]
    assert split.data.test["item_id"].tolist() == ["i2", "i3", "i4"]
    histories = split.data.train.groupby("user_idx")["item_id"].apply(sorted).to_dict()
    assert histories == {0: ["i0"], 1: ["i0", "i1", "i2"], 2: ["i1"]}
    assert split.data.users["user_id"].tolist() == ["u0@0", "u0@1", "u1@2"]


def test_score_matches_hand_computed_ranks(toy):
    split = prequential_split(toy)
    result = score(MostPopular().fit(toy), split)
    # i2 after {i0}: i4, i3 ahead (rank 3). i3 after {i0, i1, i2}: i4 ahead (rank 2). i4 after {i1}: first.
    expected = [1 / math.log2(4), 1 / math.log2(3), 1.0]
    np.testing.assert_allclose(result.per_target, expected)
    assert result.ndcg == pytest.approx(np.mean(expected))
    assert (result.targets, result.users) == (3, 2)


def test_sample_is_seeded_and_bounded(toy):
    first, again = prequential_split(toy, limit=2, seed=3), prequential_split(toy, limit=2, seed=3)
    assert len(first.data.test) == 2
    assert first.data.test["item_id"].tolist() == again.data.test["item_id"].tolist()
    assert len(prequential_split(toy, limit=10).data.test) == 3


def test_bootstrap_resamples_users_not_targets():
    values = np.arange(200) % 2.0
    one_each = bootstrap_se(values, np.arange(200), seed=0)
    assert one_each == pytest.approx(0.5 / math.sqrt(200), rel=0.15)
    # Ten identical targets per user carry no more information than one: the error stays.
    assert bootstrap_se(np.repeat(values, 10), np.repeat(np.arange(200), 10), seed=0) == pytest.approx(one_each)
    assert bootstrap_se(np.full(50, 0.3), np.arange(50) // 5) == pytest.approx(0.0)
