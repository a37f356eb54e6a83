"""The feedback log on its own: durable appends from many threads, the canonical read, training interactions."""
from __future__ import annotations

import sqlite3
import threading

import pandas as pd
import pytest

from components.data.schema import INTERACTION_COLUMNS
from components.errors import RecloopError
from components.serving.feedback import (
    FEEDBACK_COLUMNS,
    FeedbackLog,
    feedback_interactions,
    read_feedback,
)
from components.serving.schemas import RecommendedItem, RecommendResponse


def test_appends_from_many_threads_are_all_committed_and_read_back_typed(tmp_path):
    log = FeedbackLog(tmp_path / "log" / "feedback.db").open()

    def write(t: int) -> None:
        for n in range(25):
            log.append([{"request_id": f"{t}-{n}", "user_id": f"u{t}", "item_id": str(n), "timestamp": 1000 + n,
                         "event": "click", "value": 1.0, "source": "client"}])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answer = RecommendResponse(request_id="r", user_id=None, strategy="history", known_user=False, history_used=1,
                               unknown_items=[], model_version="3",
                               items=[RecommendedItem(item_id="9", title="Nine", rank=1, score=0.5, like_prob=0.25),
                                      RecommendedItem(item_id="7", title="Seven", rank=2, score=-0.125)])
    log.submit_served(answer, 5, "movies")
    log.close()  # drains the queues: the untracked answer is written too

    frame = read_feedback(tmp_path / "log" / "feedback.db")
    assert list(frame.columns) == FEEDBACK_COLUMNS
    assert len(frame) == 102 and frame["request_id"].nunique() == 101
    assert str(frame["rank"].dtype) == "Int64" and frame["timestamp"].dtype == "int64"
    served = frame[frame["source"] == "server"]
    assert served[["item_id", "rank", "score", "event", "timestamp", "domain", "model_version"]].values.tolist() == [
        ["9", 1, 0.5, "impression", 5, "movies", "3"], ["7", 2, -0.125, "impression", 5, "movies", "3"]]
    assert served["like_prob"].tolist()[0] == 0.25 and pd.isna(served["like_prob"].tolist()[1])
    assert served["user_id"].isna().all() and (served["request_id"] == "r").all()
    assert read_feedback(tmp_path / "log" / "feedback.db", since=1020)["timestamp"].min() == 1020


def test_the_log_is_wal_with_full_sync(tmp_path):
    FeedbackLog(tmp_path / "f.db").open().close()
    conn = sqlite3.connect(tmp_path / "f.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_failed_write_is_not_acknowledged(tmp_path):
    log = FeedbackLog(tmp_path / "f.db").open()
    with pytest.raises(sqlite3.IntegrityError):
        log.append([{"item_id": None, "timestamp": 1, "event": "click", "source": "client"}])  # item_id NOT NULL
    log.append([{"item_id": "1", "timestamp": 1, "event": "click", "source": "client"}])  # and it keeps working
    log.close()
    assert len(read_feedback(tmp_path / "f.db")) == 1


def test_missing_log_is_a_readable_error(tmp_path):
    with pytest.raises(RecloopError, match="does not exist"):
        read_feedback(tmp_path / "nowhere.db")


def test_client_feedback_becomes_canonical_interactions():
    frame = pd.DataFrame([
        {"request_id": "a", "user_id": "u", "item_id": "1", "timestamp": 10, "event": "impression", "value": 1.0,
         "source": "server", "domain": None},
        {"request_id": "a", "user_id": "u", "item_id": "1", "timestamp": 11, "event": "click", "value": 1.0,
         "source": "client", "domain": "movies"},
        {"request_id": "a", "user_id": "u", "item_id": "2", "timestamp": 12, "event": "rating", "value": 2.5,
         "source": "client", "domain": None},
        {"request_id": "b", "user_id": None, "item_id": "3", "timestamp": 13, "event": "like", "value": 1.0,
         "source": "client", "domain": None},
        {"request_id": "b", "user_id": "u", "item_id": "4", "timestamp": 14, "event": "dislike", "value": 1.0,
         "source": "client", "domain": None},
    ])
    out = feedback_interactions(frame)
    assert list(out.columns) == INTERACTION_COLUMNS
    assert out[["item_id", "event", "value", "domain"]].values.tolist() == [
        ["1", "click", 1.0, "movies"], ["2", "rate", 2.5, "default"]]
