"""Exploration in serving (serve.exploration): a replayed request id gets the same list and propensities,
propensities are probabilities, kind none answers as without exploration, and both feedback stores
(and a real `bentoml serve`) log and give back each impression's propensity."""
from __future__ import annotations

import sqlite3

import httpx
import numpy as np
import pytest
from serving_harness import start_server

from components.config import ExplorationConfig
from components.policy.feedback_ope import logged_lists
from components.serving.feedback import FeedbackLog, read_feedback
from components.serving.recommender import BundleRecommender
from components.serving.schemas import RecommendedItem, RecommendRequest, RecommendResponse

POLICIES = [ExplorationConfig(kind="epsilon", epsilon=0.3), ExplorationConfig(kind="boltzmann", temperature=0.5,
                                                                               samples=200)]


@pytest.fixture(scope="module")
def plain(bundle) -> BundleRecommender:
    return BundleRecommender(bundle, version="test").prepare(load_encoder=False)


@pytest.fixture(scope="module", params=POLICIES, ids=lambda c: c.kind)
def exploring(request, bundle) -> BundleRecommender:
    return BundleRecommender(bundle, version="test", exploration=request.param).prepare(load_encoder=False)


def _listed(answer: RecommendResponse) -> list[tuple[str, float]]:
    return [(i.item_id, i.propensity) for i in answer.items]


@pytest.mark.parametrize("request_fields", [{"user_id": "1"}, {"history": ["1", "260", "356"]}, {}],
                         ids=["known", "adhoc", "popularity"])
def test_a_replayed_request_id_gets_the_same_list(exploring, request_fields):
    first = exploring.recommend(RecommendRequest(k=10, request_id="req-1", **request_fields))
    again = exploring.recommend(RecommendRequest(k=10, request_id="req-1", **request_fields))
    assert first.request_id == "req-1" and _listed(first) == _listed(again)
    assert first.policy == exploring.policy != "none"
    propensity = np.array([p for _, p in _listed(first)])
    assert len(propensity) == 10 and ((propensity > 0) & (propensity <= 1)).all()
    assert [i.rank for i in first.items] == list(range(1, 11))
    assert len({i.item_id for i in first.items}) == 10
    # Another id draws another list (with 20 ids, the chance that all match is negligible).
    others = {tuple(i for i, _ in _listed(exploring.recommend(RecommendRequest(k=10, request_id=f"r{n}",
                                                                             **request_fields))))
              for n in range(20)}
    assert len(others) > 1


def test_an_answer_without_request_id_can_be_replayed_with_its_own(exploring):
    first = exploring.recommend(RecommendRequest(user_id="1", k=10))
    replay = exploring.recommend(RecommendRequest(user_id="1", k=10, request_id=first.request_id))
    assert _listed(first) == _listed(replay)


def test_kind_none_answers_the_top_k_with_propensity_one(plain, bundle):
    top = BundleRecommender(bundle, version="test", exploration=ExplorationConfig(kind="none")
                            ).prepare(load_encoder=False)
    for fields in ({"user_id": "1"}, {"history": ["1", "260", "356"]}, {}):
        answer = top.recommend(RecommendRequest(k=10, request_id="x", **fields))
        today = plain.recommend(RecommendRequest(k=10, **fields))
        # Everything but the random request id is as without exploration.
        assert answer.model_dump(exclude={"request_id"}) == today.model_dump(exclude={"request_id"})
        assert answer.policy == "none" and {i.propensity for i in answer.items} == {1.0}
    scores = [i.score for i in answer.items]
    assert scores == sorted(scores, reverse=True)


def test_an_epsilon_policy_without_enough_candidates_serves_the_top_k(plain, bundle):
    """15 precomputed candidates, all allowed: too few for epsilon over 10 slots (it needs 20)."""
    few = BundleRecommender(bundle, version="test", candidates=15,
                            exploration=ExplorationConfig(kind="epsilon", epsilon=0.5)).prepare(load_encoder=False)
    answer = few.recommend(RecommendRequest(user_id="1", k=10, request_id="r", exclude_seen=False))
    top = plain.recommend(RecommendRequest(user_id="1", k=10, exclude_seen=False))
    assert answer.policy == "none" and {i.propensity for i in answer.items} == {1.0}
    assert [i.item_id for i in answer.items] == [i.item_id for i in top.items]


@pytest.mark.parametrize("request_fields", [{"user_id": "1"}, {"history": ["1", "260", "356"]}, {}],
                         ids=["known", "adhoc", "popularity"])
def test_fresh_slots_show_cold_items_with_their_propensity(plain, bundle, request_fields):
    """fresh_share 0.2 of 10 slots: the last two show items without training interactions, drawn
    uniformly from the (at most 20) best-scored ones; the first eight are the plain top eight."""
    cold = set(bundle.items.loc[bundle.items["cold"].astype(bool), "item_id"].astype(str))
    assert len(cold) >= 2
    fresh = BundleRecommender(bundle, version="test", exploration=ExplorationConfig(fresh_share=0.2)
                              ).prepare(load_encoder=False)
    answer = fresh.recommend(RecommendRequest(k=10, request_id="f", **request_fields))
    top = plain.recommend(RecommendRequest(k=10, **request_fields))
    assert answer.policy == "none+fresh(share=0.2, pool=20)"
    # The plain top eight (ties, as among popularities, may come in another order).
    assert [i.score for i in answer.items[:8]] == pytest.approx([i.score for i in top.items[:8]])
    assert {i.propensity for i in answer.items[:8]} == {1.0}
    shown = answer.items[8:]
    assert {i.item_id for i in shown} <= cold and len({i.item_id for i in shown}) == 2
    pool = round(1 / shown[0].propensity)
    assert shown[0].propensity == shown[1].propensity == pytest.approx(1 / pool) and 2 <= pool <= 20
    if "user_id" in request_fields:  # the like head scores the fresh items too
        assert all(i.like_prob is not None for i in answer.items)
    replay = fresh.recommend(RecommendRequest(k=10, request_id="f", **request_fields))
    assert _listed(replay) == _listed(answer)


# -- the feedback log --------------------------------------------------------------------------------


def _served() -> RecommendResponse:
    return RecommendResponse(request_id="served", user_id="u1", strategy="history", known_user=True, history_used=3,
                             unknown_items=[], model_version="2", policy="epsilon=0.3",
                             items=[RecommendedItem(item_id="9", title="Nine", rank=1, score=0.5, propensity=0.7),
                                    RecommendedItem(item_id="7", title="Seven", rank=2, score=0.1,
                                                    propensity=0.0125)])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_both_stores_log_and_return_propensities(backend, tmp_path, request):
    where = tmp_path / "f.db" if backend == "sqlite" else request.getfixturevalue("postgres").create_database()
    log = FeedbackLog(where).open()
    log.append([{"request_id": "served", "user_id": "u1", "item_id": "9", "timestamp": 1_011, "event": "click",
                 "value": 1.0, "source": "client"}])
    log.submit_served(_served(), 1_010, "movies")
    log.close()
    frame = read_feedback(where)
    assert frame["propensity"].dtype == np.float64
    served = frame[frame["source"] == "server"]
    assert served["propensity"].tolist() == [0.7, 0.0125]
    assert np.isnan(frame.loc[frame["source"] == "client", "propensity"]).all()
    # recloop ope reads them (not 1.0, its fallback for logs without propensities).
    lists = logged_lists(frame, ["click"])
    assert lists["propensity"].tolist() == [0.7, 0.0125] and lists["click"].tolist() == [1.0, 0.0]


def test_an_old_sqlite_log_gets_the_column(tmp_path):
    """A log written before the propensity column: read as NaN, then written to with propensities."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, user_id TEXT, "
                 "item_id TEXT NOT NULL, rank INTEGER, score REAL, like_prob REAL, timestamp INTEGER NOT NULL, "
                 "event TEXT NOT NULL, value REAL, domain TEXT, source TEXT NOT NULL, model_version TEXT, "
                 "logged_at REAL NOT NULL)")
    conn.execute("INSERT INTO feedback (request_id, item_id, rank, timestamp, event, source, logged_at) "
                 "VALUES ('old', '1', 1, 1000, 'impression', 'server', 1.0)")
    conn.commit()
    conn.close()
    assert np.isnan(read_feedback(path)["propensity"]).all()
    log = FeedbackLog(path).open()
    log.submit_served(_served(), 1_010, None)
    log.close()
    assert read_feedback(path)["propensity"].tolist()[1:] == [0.7, 0.0125]


def test_an_old_postgres_table_gets_the_column(postgres):
    import psycopg

    url = postgres.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE feedback (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT, "
                     "user_id TEXT, item_id TEXT NOT NULL, rank INTEGER, score DOUBLE PRECISION, "
                     "like_prob DOUBLE PRECISION, timestamp BIGINT NOT NULL, event TEXT NOT NULL, "
                     "value DOUBLE PRECISION, domain TEXT, source TEXT NOT NULL, model_version TEXT, "
                     "logged_at DOUBLE PRECISION NOT NULL)")
        conn.execute("INSERT INTO feedback (request_id, item_id, rank, timestamp, event, source, logged_at) "
                     "VALUES ('old', '1', 1, 1000, 'impression', 'server', 1.0)")
    assert np.isnan(read_feedback(url)["propensity"]).all()
    log = FeedbackLog(url).open()
    log.submit_served(_served(), 1_010, None)
    log.close()
    assert read_feedback(url)["propensity"].tolist()[1:] == [0.7, 0.0125]


# -- a real server -----------------------------------------------------------------------------------


def test_a_real_server_answers_and_logs_propensities(champion, registry_cfg, store):
    server = start_server(store["root"], "explore", registry_cfg, store["bentoml_home"],
                          exploration={"kind": "boltzmann", "temperature": 0.5, "samples": 200})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            body = {"user_id": "1", "k": 5, "request_id": "replay-me"}
            first, again = (http.post("/recommend", json=body).json() for _ in range(2))
    finally:
        server.kill()
    assert first["policy"] == "boltzmann(temperature=0.5)" and first["request_id"] == "replay-me"
    assert [(i["item_id"], i["propensity"]) for i in first["items"]] == [
        (i["item_id"], i["propensity"]) for i in again["items"]]
    assert all(0 < i["propensity"] <= 1 for i in first["items"])
    logged = read_feedback(server.feedback_log)
    logged = logged[logged["request_id"] == "replay-me"].head(5)
    assert logged["item_id"].tolist() == [i["item_id"] for i in first["items"]]
    np.testing.assert_allclose(logged["propensity"], [i["propensity"] for i in first["items"]])
