"""The serving BundleRecommender in process, on the tiny trained model: consistency with the model, fresh
state from acknowledged feedback, filters, cold start."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from serving_harness import horror_likes, stored_events

from components.models.artifacts import CONFIG_FILE
from components.serving.bundle import load_bundle, write_bundle
from components.serving.feedback import FeedbackLog
from components.serving.fresh import AcknowledgedEvents
from components.serving.recommender import BundleRecommender, top_k
from components.serving.schemas import (
    HistoryEvent,
    RecommendRequest,
    RequestError,
    SimilarRequest,
)


@pytest.fixture(scope="module")
def recommender(bundle) -> BundleRecommender:
    return BundleRecommender(bundle, version="test").prepare()


def test_adhoc_history_is_encoded_exactly_like_the_stored_one(recommender, bundle):
    """The same events sent as an ad-hoc history give the precomputed known-user state's answer."""
    stored = bundle.histories[bundle.histories["user_id"] == "1"]
    events = [HistoryEvent(item_id=r.item_id, timestamp=int(r.timestamp), event=r.event, value=float(r.value),
                           domain=r.domain) for r in stored.itertuples()]
    known = recommender.recommend(RecommendRequest(user_id="1", k=10))
    adhoc = recommender.recommend(RecommendRequest(history=events, k=10))
    assert [i.item_id for i in adhoc.items] == [i.item_id for i in known.items]
    np.testing.assert_allclose([i.score for i in adhoc.items], [i.score for i in known.items], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([i.like_prob for i in adhoc.items], [i.like_prob for i in known.items], atol=1e-5)


def test_history_order_matters_and_seen_items_can_be_kept(recommender):
    forward = recommender.recommend(RecommendRequest(history=["1", "260", "356", "593"], k=20))
    backward = recommender.recommend(RecommendRequest(history=["593", "356", "260", "1"], k=20))
    assert [i.score for i in forward.items] != [i.score for i in backward.items]
    kept = recommender.recommend(RecommendRequest(history=["1", "260"], k=recommender.n_items, exclude_seen=False))
    assert {"1", "260"} <= {i.item_id for i in kept.items}


def test_cold_items_are_found_by_their_text(recommender, bundle):
    cold = bundle.items[bundle.items["cold"]]
    assert len(cold), "the tiny split holds some items out of training"
    title = cold["title"].iloc[0]
    found = recommender.similar_items(SimilarRequest(text=title, k=3))
    assert cold["item_id"].iloc[0] in {i.item_id for i in found.items}


def test_filters_refuse_unknown_names(recommender):
    with pytest.raises(RequestError, match="unknown categories"):
        recommender.recommend(RecommendRequest(user_id="1", filters={"categories": ["Nope"]}))
    with pytest.raises(RequestError, match="not in the catalog") as caught:
        recommender.similar_items(SimilarRequest(item_id="nope"))
    assert caught.value.status == 404


def test_top_k_takes_the_best_allowed_and_stops_at_what_is_allowed():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    allowed = np.array([True, False, True, True, True])
    assert top_k(scores, allowed, 2).tolist() == [3, 2]
    assert top_k(scores, np.array([False, False, True, False, False]), 3).tolist() == [2]


@pytest.mark.parametrize("candidates", [3, 40])
def test_precomputed_candidates_give_the_full_catalogs_top_k(bundle, candidates):
    """Few candidates (the catalog is scored in full) or enough: the same answer as scoring everything."""
    few = BundleRecommender(bundle, version="test", candidates=candidates).prepare(load_encoder=False)
    stored = bundle.histories[bundle.histories["user_id"] == "2"]
    events = [HistoryEvent(item_id=r.item_id, timestamp=int(r.timestamp), event=r.event, value=float(r.value),
                           domain=r.domain) for r in stored.itertuples()]
    for filters in ({}, {"categories": ["Comedy"]}, {"exclude_items": stored["item_id"].tolist()[:5]}):
        known = few.recommend(RecommendRequest(user_id="2", k=8, filters=filters))
        full = few.recommend(RecommendRequest(history=events, k=8, filters=filters))
        assert [i.item_id for i in known.items] == [i.item_id for i in full.items]
        np.testing.assert_allclose([i.like_prob for i in known.items], [i.like_prob for i in full.items], atol=1e-5)


def test_acknowledged_events_make_the_next_answer_fresh(bundle, tmp_path):
    """Likes logged after the bundle: the user's next answer is the ad-hoc answer of stored + new events,
    impressions and dislikes do not count, and the state is recomputed only when events arrive."""
    log = FeedbackLog(tmp_path / "feedback.db").open()
    fresh = AcknowledgedEvents(log.path, since=0).open()
    live = BundleRecommender(bundle, version="test", fresh=fresh).prepare(load_encoder=False)
    before = live.recommend(RecommendRequest(user_id="1", k=10))
    likes = horror_likes(bundle, "1", 4, start=1_700_000_000)
    noise = [{**likes[0], "item_id": "1", "event": "impression"}, {**likes[0], "item_id": "2", "event": "dislike"}]
    log.append([{**e, "source": "client", "value": 1.0} for e in likes + noise])
    request = RecommendRequest(user_id="1", k=10)
    assert live.recommend(request).items == before.items  # nothing read yet
    fresh.refresh()
    after = live.recommend(request)
    cached = live.fresh_states["1"]
    assert cached.events == 4  # the likes; the impression and the dislike do not count
    assert live.recommend(request).items == after.items and live.fresh_states["1"] is cached  # not recomputed
    adhoc = live.recommend(RecommendRequest(history=[HistoryEvent(**e) for e in stored_events(bundle, "1")] + [
        HistoryEvent(item_id=e["item_id"], timestamp=e["timestamp"], event="like", value=1.0) for e in likes], k=10))
    assert [i.item_id for i in after.items] == [i.item_id for i in adhoc.items]
    np.testing.assert_allclose([i.score for i in after.items], [i.score for i in adhoc.items], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([i.like_prob for i in after.items], [i.like_prob for i in adhoc.items], atol=1e-5)
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert after.history_used == before.history_used + 4
    assert not {e["item_id"] for e in likes} & {i.item_id for i in after.items}  # seen now
    log.append([{**likes[0], "item_id": "2", "event": "rating", "value": 5.0, "source": "client"}])
    fresh.refresh()
    assert live.recommend(request).history_used == after.history_used + 1 and live.fresh_states["1"].events == 5
    log.close()
    fresh.close()


def test_far_away_timestamps_are_refused(recommender):
    for timestamp in (10**17, 1_700_000_000_000, 0):
        with pytest.raises(RequestError, match="far outside the data"):
            recommender.recommend(RecommendRequest(history=[{"item_id": "1", "timestamp": timestamp}]))


def test_a_model_saved_with_cosine_is_served_by_the_cosine(tiny_dirs, tmp_path):
    """What `recloop transfer --mode zero-shot` saves (transfer.zero_shot_scores: cosine) is served as it was
    measured: unit item and user vectors on the precomputed and the ad-hoc paths alike."""
    model_dir = tmp_path / "finetuned"
    shutil.copytree(tiny_dirs["finetuned"], model_dir)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert config["cosine"] is False
    (model_dir / CONFIG_FILE).write_text(json.dumps({**config, "cosine": True}))
    write_bundle(model_dir, tiny_dirs["split"], tiny_dirs["features"], tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    served = BundleRecommender(bundle, version="cosine").prepare()
    table, states = np.asarray(served.table), np.asarray(served.states)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(states, axis=1), 1.0, atol=1e-5)

    known = served.recommend(RecommendRequest(user_id="1", k=10, exclude_seen=False))
    best = np.sort(states[served.user_row["1"]] @ table.T)[::-1][:10]
    np.testing.assert_allclose([i.score for i in known.items], best, rtol=1e-4, atol=1e-5)
    stored = bundle.histories[bundle.histories["user_id"] == "1"]
    events = [HistoryEvent(item_id=r.item_id, timestamp=int(r.timestamp), event=r.event, value=float(r.value),
                           domain=r.domain) for r in stored.itertuples()]
    adhoc = served.recommend(RecommendRequest(history=events, k=10, exclude_seen=False))
    assert [i.item_id for i in adhoc.items] == [i.item_id for i in known.items]
    np.testing.assert_allclose([i.score for i in adhoc.items], best, rtol=1e-4, atol=1e-5)
