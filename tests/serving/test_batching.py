"""Encoder calls shared by concurrent requests (components/serving/batching.py): a batch answers exactly what
each request gets alone, on the tiny trained model, in process."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serving_harness import horror_likes, stored_events

from components.serving.batching import EXTRA_PASSES, EncoderBatcher
from components.serving.feedback import FeedbackLog
from components.serving.fresh import AcknowledgedEvents
from components.serving.recommender import BundleRecommender, Encoding
from components.serving.schemas import RecommendRequest, RecommendResponse, RequestError


@pytest.fixture(scope="module")
def live(bundle, tmp_path_factory):
    """A recommender following a feedback log in which users 1 and 3 liked a few films after the bundle."""
    log = FeedbackLog(tmp_path_factory.mktemp("batching") / "feedback.db").open()
    fresh = AcknowledgedEvents(log.path, since=0).open()
    recommender = BundleRecommender(bundle, version="test", fresh=fresh).prepare(load_encoder=False)
    likes = horror_likes(bundle, "1", 3, start=1_700_000_000) + horror_likes(bundle, "3", 2, start=1_700_000_000)
    log.append([{**e, "source": "client", "value": 1.0} for e in likes])
    fresh.refresh()
    yield recommender
    log.close()
    fresh.close()


def mixed_requests(bundle) -> list[RecommendRequest]:
    """Ad-hoc histories of different lengths, with and without timestamps, filters, seen items kept, a
    known user plus ad-hoc events, fresh users, a stored user and a cold start."""
    items = bundle.items["item_id"].astype(str).tolist()
    two = stored_events(bundle, "2")
    return [
        RecommendRequest(history=items[:3], k=5),
        RecommendRequest(history=items[10:40], k=10, exclude_seen=False),
        RecommendRequest(history=[{**e, "timestamp": e["timestamp"]} for e in two], k=7),
        RecommendRequest(history=items[5:9], k=8, filters={"categories": ["Comedy"]}, explain=True),
        RecommendRequest(user_id="2", history=items[50:52], k=6),
        RecommendRequest(user_id="1", k=10),  # fresh: three likes since the bundle
        RecommendRequest(user_id="3", k=4, filters={"exclude_items": items[:20]}),  # fresh, filtered
        RecommendRequest(history=[items[60]], k=3),  # one item
        RecommendRequest(user_id="4", k=5),  # stored: no encoder call
        RecommendRequest(user_id="nobody", k=5),  # cold start
    ]


def assert_same(batched: RecommendResponse, alone: RecommendResponse) -> None:
    assert [i.item_id for i in batched.items] == [i.item_id for i in alone.items]
    assert (batched.strategy, batched.history_used, batched.unknown_items) == (
        alone.strategy, alone.history_used, alone.unknown_items)
    # Equal up to float32 rounding: the BLAS kernels block a (B, ...) product differently for each B.
    np.testing.assert_allclose([i.score for i in batched.items], [i.score for i in alone.items], rtol=1e-5, atol=1e-6)
    likes = [[np.nan if i.like_prob is None else i.like_prob for i in r.items] for r in (batched, alone)]
    np.testing.assert_allclose(*likes, atol=1e-6)
    assert [i.explanation for i in batched.items] == [i.explanation for i in alone.items]


def test_a_batch_of_mixed_requests_answers_what_each_gets_alone(live, bundle):
    requests = mixed_requests(bundle)
    alone = [live.recommend(r) for r in requests]  # fills the fresh users' cache
    live.fresh_states.clear()  # so that the batch recomputes the fresh users' states itself
    steps = [live.start(r) for r in requests]
    pending = [s for s in steps if isinstance(s, Encoding)]
    assert len(pending) == 8  # six ad-hoc histories and two fresh users; the stored user and the cold start not
    answers = iter(live.finish(pending))
    batched = [s if isinstance(s, RecommendResponse) else next(answers) for s in steps]
    for b, a in zip(batched, alone):
        assert_same(b, a)
    assert live.fresh_states["1"].events == 3 and live.fresh_states["3"].events == 2
    assert not isinstance(live.start(RecommendRequest(user_id="1", k=10)), Encoding)  # cached now


def test_concurrent_requests_share_one_encoder_call_and_a_bad_one_fails_alone(live, bundle):
    requests = mixed_requests(bundle)
    alone = [live.recommend(r) for r in requests]
    live.fresh_states.clear()
    items = bundle.items["item_id"].astype(str).tolist()
    bad = RecommendRequest(history=items[:2], filters={"categories": ["No such category"]})
    sizes: list[int] = []
    batcher = EncoderBatcher(observe=sizes.append)

    async def one(request: RecommendRequest) -> RecommendResponse:
        step = live.start(request)
        return step if isinstance(step, RecommendResponse) else await batcher.recommend(live, step)

    async def together():
        return await asyncio.gather(*(one(r) for r in [*requests, bad]), return_exceptions=True)

    *answers, refused = asyncio.run(together())
    assert sizes == [9]  # the eight encodings and the bad one, in one call
    assert isinstance(refused, RequestError) and "unknown categories" in str(refused)
    for b, a in zip(answers, alone):
        assert_same(b, a)


def test_a_lone_request_is_answered_in_a_batch_of_one(live, bundle):
    sizes: list[int] = []
    batcher = EncoderBatcher(observe=sizes.append)
    request = RecommendRequest(history=bundle.items["item_id"].astype(str).tolist()[:5], k=5)

    async def lone():
        return await batcher.recommend(live, live.start(request))

    assert_same(asyncio.run(lone()), live.recommend(request))
    assert sizes == [1]


def test_batches_stop_at_their_maximum(live, bundle):
    items = bundle.items["item_id"].astype(str).tolist()
    requests = [RecommendRequest(history=items[j:j + 4], k=3) for j in range(7)]
    sizes: list[int] = []
    batcher = EncoderBatcher(max_size=3, observe=sizes.append)

    async def together():
        return await asyncio.gather(*(batcher.recommend(live, live.start(r)) for r in requests))

    for b, r in zip(asyncio.run(together()), requests):
        assert_same(b, live.recommend(r))
    assert sizes == [3, 3, 1]


def test_a_growing_batch_waits_a_pass_or_two_for_more(live, bundle):
    """Requests reaching the batcher over consecutive passes of the loop join one call, for at most
    EXTRA_PASSES extra passes: a request that comes later gets the next call."""
    assert EXTRA_PASSES == 2
    items = bundle.items["item_id"].astype(str).tolist()
    sizes: list[int] = []
    batcher = EncoderBatcher(observe=sizes.append)

    async def after(passes: int, request: RecommendRequest) -> RecommendResponse:
        for _ in range(passes):
            await asyncio.sleep(0)  # one pass of the loop
        return await batcher.recommend(live, live.start(request))

    async def together():
        return await asyncio.gather(*(after(passes, RecommendRequest(history=items[j:j + 3], k=3))
                                      for j, passes in enumerate([0, 0, 1, 2, 5])))

    asyncio.run(together())
    assert sizes == [4, 1]
