"""The BentoML service: recommend, similar_items, feedback, info, reload (plus BentoML's /livez, /readyz, /metrics).

    bentoml serve components.serving.service:RecloopService     # from the repo (bentofile.yaml says the same)

Parameters come from params.yaml in the working directory, or the file named by $RECLOOP_PARAMS.
The model is BentoML's `<registry.bento_model>:latest`, which `recloop promote` imports from the
registry's champion; `reload` imports the current champion and swaps it in: the new model is
loaded completely first, then one attribute is replaced, so a request in flight finishes on the
model it started with.

Bad input is answered 4xx with a message saying what to fix: pydantic type errors (400, BentoML),
limits and unknown filters (400), unknown items for similar_items (404), oversized bodies (413).
"""
from __future__ import annotations

import asyncio
import gc
import hmac
import os
import time

import bentoml
import torch
from bentoml.models import BentoModel
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from threadpoolctl import threadpool_limits

from components.config import Params, load_params
from components.errors import RecloopError
from components.serving import timeout
from components.serving.bento import VERSION_LABEL, import_champion
from components.serving.bundle import find_bundle, load_bundle
from components.serving.feedback import FeedbackLog
from components.serving.limits import (
    PayloadLimit,
    check_feedback,
    check_recommend,
    check_similar,
)
from components.serving.recommender import BundleRecommender
from components.serving.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    InfoResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    RequestError,
    SimilarRequest,
    SimilarResponse,
)

PARAMS_ENV = "RECLOOP_PARAMS"
# Read at import: the decorator, the model reference and the payload limit are fixed when the class is built.
PARAMS: Params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))

RECOMMENDATIONS = bentoml.metrics.Counter(name="recloop_recommendations", documentation="recommend answers",
                                          labelnames=["strategy"])
UNKNOWN_ITEMS = bentoml.metrics.Counter(name="recloop_unknown_history_items",
                                        documentation="history item ids not in the catalog (ignored)")
FEEDBACK_EVENTS = bentoml.metrics.Counter(name="recloop_feedback_events", documentation="feedback events logged",
                                          labelnames=["event"])


def refusal(error: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.status)


def as_json(answer: BaseModel) -> Response:
    """The answer serialised once (BentoML would validate, dump and serialise the model again)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def load_bento_recommender(model: bentoml.Model, candidates: int, encoder=None) -> BundleRecommender:
    """A ready BundleRecommender from an imported BentoML model (the MLflow model folder holds the bundle)."""
    bundle = load_bundle(find_bundle(model.path_of("mlflow_model")))
    version = model.info.labels.get(VERSION_LABEL, str(model.tag.version))
    if encoder is not None and encoder.encoder != bundle.encoder:
        encoder = None
    return BundleRecommender(bundle, version, encoder, candidates).prepare()


# Measured on 2 cores (docs/serving.md): one worker, because /reload reaches a single worker and a
# second would keep serving the old model; one meets the load targets (two nearly doubled throughput
# on an otherwise idle machine, at 1.7x the memory). No max_concurrency (beyond it BentoML answers 503) and
# no adaptive batching (it answered 503 under 32 connections; a known user's answer is a lookup anyway).
# No access log: a line written per request cost more than a known user's answer; /metrics counts
# requests and latencies, and the feedback log holds every answer.
SERVER_SETTINGS = {"workers": 1, "traffic": {"timeout": 30}, "logging": {"access": {"enabled": False}}}
# Before BentoML builds the app (after this import): its own timeout keeps every request alive for
# the whole 30 s (components/serving/timeout.py).
timeout.install()


def settle_heap() -> None:
    """Exempt every object alive now (imports, the loaded model) from the garbage collector's scans.

    The worker holds ~500,000 long-lived objects, and every full collection walked them all: under
    32 connections one every few seconds, each stopping the event loop for 0.2-0.3 s (p99 236 ms
    without this, 53 ms with it; docs/benchmarks.md). Frozen objects are still freed by reference
    counting, and a dropped BundleRecommender leaves no reference cycles (measured), so freezing again
    after a reload leaks nothing.
    """
    gc.collect()
    gc.freeze()


@bentoml.service(name="recloop", **SERVER_SETTINGS)
class RecloopService:
    bento_model = BentoModel(f"{PARAMS.registry.bento_model}:latest")

    def __init__(self) -> None:
        # Requests are tiny: more intra-op threads only fight the server's own threads for the cores.
        # OpenBLAS (numpy) too: with two threads on a busy machine one (items, dim) product took 16 ms
        # instead of 0.2 ms (threads spinning for a core).
        torch.set_num_threads(1)
        threadpool_limits(1)
        self.params = PARAMS
        try:
            stored = self.bento_model
        except Exception as e:  # BentoML reports a missing model as a failed BentoCloud lookup
            raise RecloopError(f"no model {PARAMS.registry.bento_model!r} in BentoML's store ({e}): "
                               "run `recloop promote`, which imports the registry's champion") from None
        self.recommender = load_bento_recommender(stored, PARAMS.serve.candidates)
        self.log = FeedbackLog(PARAMS.serve.feedback_log).open()
        self._reloading = asyncio.Lock()
        settle_heap()

    def __is_ready__(self) -> bool:
        return self.recommender is not None

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self.log.close()

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for a known user_id, an ad-hoc history, or a cold start (text, context, popularity)."""
        recommender = self.recommender  # one model for the whole request, even if a reload swaps it meanwhile
        try:
            check_recommend(request, self.params.serve)
            if request.history is None and request.text is None:
                # A stored user or popularity: well under a millisecond, cheaper run here than handed to
                # a thread (each hand-over of the GIL between threads can cost a 5 ms switch interval).
                answer = recommender.recommend(request)
            else:
                # The encoder (milliseconds): in a thread, so the event loop keeps serving the rest.
                answer = await asyncio.to_thread(recommender.recommend, request)
        except RequestError as e:
            return refusal(e)
        self.log.submit_served(answer, int(time.time()), request.context.domain)
        RECOMMENDATIONS.labels(strategy=answer.strategy).inc()
        if answer.unknown_items:
            UNKNOWN_ITEMS.inc(len(answer.unknown_items))
        return as_json(answer)

    @bentoml.api
    def similar_items(self, request: SimilarRequest, /) -> SimilarResponse:
        """Items like item_id (the model's item space), or matching free text (the language model)."""
        recommender = self.recommender
        try:
            check_similar(request, self.params.serve)
            return as_json(recommender.similar_items(request))
        except RequestError as e:
            return refusal(e)

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /) -> FeedbackResponse:
        """Log impressions, clicks, likes, ratings...; answers only once they are durably written."""
        try:
            check_feedback(request, self.params.serve)
        except RequestError as e:
            return refusal(e)
        now = int(time.time())
        recommender = self.recommender
        rows = [{**event.model_dump(), "timestamp": event.timestamp or now, "source": "client",
                 "value": 1.0 if event.value is None else event.value, "model_version": recommender.version}
                for event in request.events]
        try:
            await asyncio.wrap_future(self.log.submit(rows))
        except Exception as e:  # the disk, not the client: 503 says "retry", and nothing was acknowledged
            return JSONResponse({"error": f"the feedback log could not be written ({e}); retry later"},
                                status_code=503)
        for event in request.events:
            FEEDBACK_EVENTS.labels(event=event.event).inc()
        known = recommender.known_items([e.item_id for e in request.events])
        unknown = list(dict.fromkeys(e.item_id for e, ok in zip(request.events, known) if not ok))
        return FeedbackResponse(accepted=len(rows), durable=True, unknown_items=unknown)

    @bentoml.api
    def info(self) -> InfoResponse:
        """Which model version is served and the request limits."""
        recommender = self.recommender
        serve = self.params.serve
        return InfoResponse(model_version=recommender.version, items=recommender.n_items,
                            users=len(recommender.user_index), encoder=recommender.bundle.encoder,
                            bundle_created_at=int(recommender.bundle.meta.get("created_at", 0)),
                            loaded_at=recommender.loaded_at,
                            limits={"max_k": serve.max_k, "max_history": serve.max_history,
                                    "max_text_chars": serve.max_text_chars,
                                    "max_feedback_events": serve.max_feedback_events,
                                    "max_payload_bytes": serve.max_payload_bytes})

    @bentoml.api
    async def reload(self, ctx: bentoml.Context) -> ReloadResponse:
        """Switch to the registry's current champion (needs `Authorization: Bearer <token>`)."""
        name = self.params.serve.reload_token_env
        token = os.environ.get(name)
        sent = ctx.request.headers.get("authorization", "")
        refused = None
        if not token:
            refused = RequestError(f"reload is disabled: start the server with the environment variable {name} "
                                   "set to a secret token", status=403)
        elif not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            refused = RequestError(f"reload needs the header 'Authorization: Bearer <token>' with the token in "
                                   f"the server's {name}", status=401)
        if refused is not None:
            # With a context parameter BentoML answers with the context's status, not the response's.
            ctx.response.status_code = refused.status
            return refusal(refused)
        async with self._reloading:
            start = time.perf_counter()
            previous = self.recommender
            # Load in a thread of its own: requests keep being answered by `previous` meanwhile.
            fresh = await asyncio.to_thread(self._load_champion, previous)
            self.recommender = fresh
        return ReloadResponse(previous_version=previous.version, version=fresh.version,
                              changed=fresh is not previous, seconds=round(time.perf_counter() - start, 3))

    def _load_champion(self, current: BundleRecommender) -> BundleRecommender:
        imported = import_champion(self.params.registry)
        if str(imported.version) == current.version:
            return current
        fresh = load_bento_recommender(bentoml.models.get(imported.tag), self.params.serve.candidates,
                                       current.encoder)
        settle_heap()
        return fresh


RecloopService.add_asgi_middleware(PayloadLimit, max_bytes=PARAMS.serve.max_payload_bytes)
