"""BentoML's own adaptive batching on the encoder path, for bench/serve_load.py (--adaptive-seconds).

The service's recommend path (`BundleRecommender.start` / `finish`: one encoder call, one product
and top-k per batch) behind a batchable BentoML endpoint: BentoML's dispatcher collects concurrent
requests and calls `recommend` with the list, where RecloopService's own `EncoderBatcher` collects
them on the event loop. Same settings, model and impressions logging as RecloopService; clients send
`{"requests": [<one recommend request>]}` and get a list of one answer.
"""
from __future__ import annotations

import time

import bentoml
import torch
from bentoml.models import BentoModel
from threadpoolctl import threadpool_limits

from components.serving.feedback import FeedbackLog, store_location
from components.serving.recommender import Encoding
from components.serving.schemas import RecommendRequest, RecommendResponse
from components.serving.service import PARAMS, SERVER_SETTINGS, load_bento_recommender, settle_heap

# The encoder batch's size as in EncoderBatcher; a latency budget ten times the p99 target, so
# that the dispatcher refuses (503) only what it cannot answer within a second.
MAX_BATCH = 32
MAX_LATENCY_MS = 1000


@bentoml.service(name="adaptive", **SERVER_SETTINGS)
class Adaptive:
    bento_model = BentoModel(f"{PARAMS.registry.bento_model}:latest")

    def __init__(self) -> None:
        torch.set_num_threads(1)
        threadpool_limits(1)
        self.log = FeedbackLog(store_location(PARAMS.serve)).open()
        self.recommender = load_bento_recommender(self.bento_model, PARAMS.serve)
        settle_heap()

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self.log.close()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    async def recommend(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        recommender = self.recommender
        steps = [recommender.start(r) for r in requests]
        pending = [s for s in steps if isinstance(s, Encoding)]
        encoded = iter(recommender.finish(pending) if pending else [])
        answers = [s if isinstance(s, RecommendResponse) else next(encoded) for s in steps]
        now = int(time.time())
        for request, answer in zip(requests, answers):
            self.log.submit_served(answer, now, request.context.domain)
        return answers
