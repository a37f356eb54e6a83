"""Interactions -> padded tensors: every training transition exactly once, histories end at the stage, context codes."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.config import LabelsConfig
from components.data.dataset import SplitData
from components.models.catalog import item_attribute_codes
from components.models.sequences import feedback_labels, history_sequences, profile_codes, training_rows
from components.models.vocab import fit_vocab

ML_100K_USERS = Path(__file__).resolve().parents[1] / "fixtures" / "ml-100k" / "u.user"


def transitions(data: SplitData) -> Counter:
    """(user, item, next item) of every consecutive pair in each user's training history (1-based items)."""
    user, item = data.train["user_idx"].to_numpy(), data.train["item_idx"].to_numpy() + 1
    same = user[1:] == user[:-1]
    return Counter(zip(user[1:][same].tolist(), item[:-1][same].tolist(), item[1:][same].tolist()))


@pytest.mark.parametrize("max_len", [1, 7, 30])
def test_all_windows_supervise_every_transition_once(movielens, max_len):
    vocab = fit_vocab(movielens, 8, 2)
    rows = training_rows(movielens, vocab, max_len, "all")
    inputs, targets = rows.batch(torch.arange(len(rows)))
    real = targets.items > 0
    users = rows.sequences.users[:, None].expand_as(real)
    got = Counter(zip(users[real].tolist(), inputs.items[real].tolist(), targets.items[real].tolist()))
    assert got == transitions(movielens)
    assert inputs.items.shape[1] <= max_len
    # Right padding: each row's supervised positions come first, exactly its input length of them.
    assert torch.equal(real, torch.arange(inputs.items.shape[1]) < inputs.lengths[:, None])


def test_last_window_is_each_users_latest_interactions(movielens):
    vocab = fit_vocab(movielens, 8, 2)
    rows = training_rows(movielens, vocab, 10, "last")
    assert len(rows) == movielens.n_users
    user = int(rows.sequences.users[5])
    latest = movielens.train.loc[movielens.train["user_idx"] == user, "item_idx"].to_numpy()[-11:] + 1
    assert rows.sequences.features["items"][5, :len(latest)].tolist() == latest.tolist()


def test_history_rows_end_just_before_the_stage_target(movielens):
    vocab = fit_vocab(movielens, 8, 2)
    valid, test = (history_sequences(movielens, vocab, stage, 20) for stage in ("valid", "test"))
    for user in (0, 17, 101):
        train_items = movielens.train.loc[movielens.train["user_idx"] == user, "item_idx"].to_numpy() + 1
        valid_item = int(movielens.valid.loc[movielens.valid["user_idx"] == user, "item_idx"].iloc[0]) + 1
        n = int(valid.lengths[user])
        assert valid.features["items"][user, :n].tolist() == train_items[-20:].tolist()
        m = int(test.lengths[user])
        assert test.features["items"][user, m - 1] == valid_item
        assert test.features["items"][user, :m - 1].tolist() == train_items[-19:].tolist()


def test_time_and_value_codes(movielens):
    vocab = fit_vocab(movielens, 8, 2)
    rows = training_rows(movielens, vocab, 30, "last")
    frame = movielens.train[movielens.train["user_idx"] == int(rows.sequences.users[0])].tail(31)
    ts = pd.to_datetime(frame["timestamp"].to_numpy(), unit="s", utc=True)
    features = rows.sequences.features
    n = len(frame)
    assert features["hours"][0, :n].tolist() == (ts.hour + 1).tolist()
    assert features["weekdays"][0, :n].tolist() == (ts.weekday + 1).tolist()  # Monday = 1
    gaps = features["gaps"][0, :n]
    assert ((gaps >= 1) & (gaps < 24)).all()
    assert features["values"][0, :n].min() >= 1  # 0 is reserved for padding
    assert vocab.events == ["rate"] and vocab.domains == ["movies"]


def test_like_and_rating_labels(movielens):
    vocab = fit_vocab(movielens, 8, 2)
    frame = pd.DataFrame({"event": ["rate", "rate", "view", "click"], "value": [4.5, 2.0, 1.0, 1.0]})
    clicks = LabelsConfig(like_threshold=4.0, like_events=["click"])
    likes, ratings = feedback_labels(frame, vocab, clicks)
    # Only ratings are known events here, so the click is not told apart from the view: no label.
    assert likes[:2].tolist() == [1.0, 0.0] and np.isnan(likes[2:]).all()
    assert ratings[:2].tolist() == [4.5, 2.0] and np.isnan(ratings[2:]).all()
    vocab.events = ["click", "rate", "view"]
    likes, _ = feedback_labels(frame, vocab, clicks)
    assert likes.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_profiles_and_item_attributes(movielens):
    users = pd.read_csv(ML_100K_USERS, sep="|", names=["user_id", "age", "gender", "occupation", "zip"],
                        dtype={"user_id": str, "zip": str})
    data = SplitData(movielens.items, users, movielens.train, movielens.valid, movielens.test)
    vocab = fit_vocab(data, 4, 2)
    assert vocab.profile_columns == ["age", "gender", "occupation", "zip"]
    assert set(vocab.profile_values["gender"]) == {"F", "M"}
    codes = profile_codes(users, vocab)
    assert codes.shape == (len(users), 4)
    age = codes[:, 0]
    assert (np.diff(age[np.argsort(users["age"].to_numpy(), kind="stable")]) >= 0).all()  # buckets follow age
    assert (codes[:, 3] == 0).mean() > 0.9  # zip codes are nearly unique: mostly the unknown row

    attrs = item_attribute_codes(movielens.items, vocab, 16)
    toy_story = movielens.items.index[movielens.items["item_id"] == "1"][0]
    names = {vocab.attributes[c - 1] for c in attrs[toy_story] if c}
    assert names == {"category:Adventure", "category:Animation", "category:Children", "category:Comedy",
                     "category:Fantasy"}
