"""Fresh state keeps only what can change an answer: a user with more than max_len acknowledged events keeps
the latest max_len + 1 in full (the rest as item rows) and still gets the ad-hoc answer of stored + all events."""
from __future__ import annotations

import numpy as np
from serving_harness import stored_events

from components.serving.feedback import FeedbackLog
from components.serving.fresh import AcknowledgedEvents
from components.serving.recommender import BundleRecommender
from components.serving.schemas import HistoryEvent, RecommendRequest


def test_a_long_fresh_history_keeps_the_latest_and_answers_as_the_full_one(bundle, tmp_path):
    log = FeedbackLog(tmp_path / "feedback.db").open()
    seen = set(bundle.histories.loc[bundle.histories["user_id"] == "1", "item_id"])
    unseen = [i for i in bundle.items["item_id"].astype(str) if i not in seen]
    first = [{"user_id": "1", "item_id": unseen[0], "event": "click", "timestamp": 1_700_000_000,
              "source": "client", "value": 1.0}]
    log.append(first)  # read at open, before the recommender attaches its catalog
    fresh = AcknowledgedEvents(log.path, since=0).open()
    live = BundleRecommender(bundle, version="test", fresh=fresh).prepare(load_encoder=False)
    keep = live.max_len + 1
    n = keep + 14
    rng = np.random.default_rng(7)
    # Timestamps out of acknowledgement order, with ties; one item outside the catalog; repeated items.
    times = 1_700_000_000 + 60 * rng.integers(0, n // 2, n)
    events = [{"user_id": "1", "item_id": unseen[1 + j % (n - 5)], "event": "like" if j % 3 else "click",
               "timestamp": int(t), "source": "client", "value": 1.0} for j, t in enumerate(times)]
    events[5]["item_id"] = "not-in-the-catalog"
    log.append(events)
    fresh.refresh()
    mine = fresh.of("1")
    assert mine.count == n + 1 and len(mine.recent) == keep and len(mine.earlier) == n + 1 - 1 - keep
    everything = first + events
    history = [HistoryEvent(**e) for e in stored_events(bundle, "1")] + [
        HistoryEvent(item_id=e["item_id"], timestamp=e["timestamp"], event=e["event"], value=1.0)
        for e in everything if e["item_id"] != "not-in-the-catalog"]
    for request in ({"k": 10, "explain": True}, {"k": 10, "exclude_seen": False},
                    {"k": 5, "filters": {"categories": ["Comedy"]}}):
        after = live.recommend(RecommendRequest(user_id="1", **request))
        adhoc = live.recommend(RecommendRequest(history=history, **request))
        assert [i.item_id for i in after.items] == [i.item_id for i in adhoc.items]
        assert [i.explanation for i in after.items] == [i.explanation for i in adhoc.items]
        np.testing.assert_allclose([i.score for i in after.items], [i.score for i in adhoc.items],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([i.like_prob for i in after.items], [i.like_prob for i in adhoc.items],
                                   rtol=1e-5, atol=1e-6)
        assert after.history_used == adhoc.history_used == len(history)
        if request.get("exclude_seen", True):
            assert not {e["item_id"] for e in everything} & {i.item_id for i in after.items}
    log.close()
    fresh.close()
