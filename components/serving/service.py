"""The BentoML service: recommend, similar_items, feedback, info, reload (plus BentoML's /livez, /readyz, /metrics).

    bentoml serve components.serving.service:RecloopService     # from the repo (bentofile.yaml says the same)

Parameters come from params.yaml in the working directory, or the file named by $RECLOOP_PARAMS.
The model is BentoML's `<registry.bento_model>:latest`, which `recloop promote` imports from the
registry's champion. Every worker follows the champion on its own: it checks the registry's alias
every `serve.watch_seconds` and switches when it moved; `reload` switches the worker that answers
it at once. A switch imports the champion (once, under a lock, whichever worker comes first),
loads it completely, then replaces one attribute, so a request in flight finishes on the model it
started with. If the registry cannot be reached the old model keeps serving (`reload`: 503; over HTTP within
`serve.registry_timeout_seconds` and `serve.registry_retries`, not MLflow's minutes of retries).

One service, many domains: a catalog packaged and promoted as a domain (`registry.domain`, its own
registered model `<model_name>-<domain>`) answers the requests whose `context.domain` names it; any
other request (no domain, or one not promoted) goes to the default model, as before domains existed.
At start the service serves the domains imported into BentoML's store; `reload` and the watch add
every domain the registry promotes since, follow their champions, and drop a domain that lost its
champion. Answers say which domain (null: the default) and which mode (trained, zero-shot, adapter,
full) served them; `info` lists the served domains.

Bad input is answered 4xx with a message saying what to fix: pydantic type errors (400, BentoML),
limits, unknown filters and far-off timestamps (400), unknown items for similar_items (404),
oversized bodies (413); each is one WARNING line in the log (components/serving/logs.py).
"""
from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import threading
import time
from typing import get_args

import bentoml
import torch
from bentoml.models import BentoModel
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from threadpoolctl import threadpool_limits

from components.config import Params, ServeConfig, load_params
from components.errors import RecloopError
from components.registry.registry import CHAMPION, alias_version, bound_http_requests, for_domain, promoted_domains
from components.serving import logs, timeout
from components.serving.batching import EncoderBatcher
from components.serving.bento import VERSION_LABEL, import_champion, stored_domains
from components.serving.bundle import find_bundle, load_bundle
from components.serving.feedback import FeedbackLog, FeedbackStoreUnavailable, store_location
from components.serving.fresh import AcknowledgedEvents
from components.serving.heap import keep_freed_memory
from components.serving.limits import (
    PayloadLimit,
    check_feedback,
    check_recommend,
    check_similar,
)
from components.serving.recommender import BundleRecommender
from components.serving.schemas import (
    FEEDBACK_EVENTS as EVENT_NAMES,
    DomainInfo,
    FeedbackRequest,
    FeedbackResponse,
    InfoResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    RequestError,
    SimilarRequest,
    SimilarResponse,
    Strategy,
)
from components.serving.tally import Tally

PARAMS_ENV = "RECLOOP_PARAMS"
# Read at import: the decorator, the model reference and the payload limit are fixed when the class is built.
PARAMS: Params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))
logger = logging.getLogger("recloop.serving")

RECOMMENDATIONS = bentoml.metrics.Counter(name="recloop_recommendations", documentation="recommend answers",
                                          labelnames=["strategy"])
UNKNOWN_ITEMS = bentoml.metrics.Counter(name="recloop_unknown_history_items",
                                        documentation="history item ids not in the catalog (ignored)")
ENCODER_BATCH = bentoml.metrics.Histogram(name="recloop_encoder_batch_size",
                                         documentation="requests per encoder call (ad-hoc histories, fresh users)",
                                         buckets=(1, 2, 4, 8, 16, 32, 64))
FEEDBACK_EVENTS = bentoml.metrics.Counter(name="recloop_feedback_events", documentation="feedback events logged",
                                          labelnames=["event"])


def refusal(error: RequestError, path: str) -> JSONResponse:
    logs.refused("POST", path, error.status, str(error))
    return JSONResponse({"error": str(error)}, status_code=error.status)


def as_json(answer: BaseModel) -> Response:
    """The answer serialised once (BentoML would validate, dump and serialise the model again)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def load_bento_recommender(model: bentoml.Model, serve: ServeConfig, encoder=None,
                           domain: str | None = None) -> BundleRecommender:
    """A ready BundleRecommender from an imported BentoML model (the MLflow model folder holds the bundle),
    following the feedback log's acknowledged events since its bundle was built; `domain`: the promoted
    domain it serves (None: the default model)."""
    bundle = load_bundle(find_bundle(model.path_of("mlflow_model")))
    version = model.info.labels.get(VERSION_LABEL, str(model.tag.version))
    if encoder is not None and encoder.encoder != bundle.encoder:
        encoder = None
    fresh = AcknowledgedEvents(store_location(serve), since=float(bundle.meta.get("created_at", 0)))
    recommender = BundleRecommender(bundle, version, encoder, serve.candidates, fresh, ann_above=serve.ann_above,
                                    exploration=serve.exploration, domain=domain)
    fresh.open()  # after the recommender attached its catalog: a long log is trimmed as it is read, never held whole
    return recommender.prepare()


# Measured on 2 cores (docs/serving.md): serve.workers (default one; two nearly doubled throughput
# on an otherwise idle machine, at 1.7x the memory; each worker follows the champion itself).
# No max_concurrency (beyond it BentoML answers 503) and no BentoML adaptive batching: requests that need
# the encoder are batched on the event loop (EncoderBatcher), 5x faster than BentoML's batching of the
# same path (docs/benchmarks.md, "Batched encoder calls").
# No access log: a line written per request cost more than a known user's answer; /metrics counts
# requests and latencies, and the feedback log holds every answer.
SERVER_SETTINGS = {"workers": PARAMS.serve.workers, "traffic": {"timeout": 30},
                   "logging": {"access": {"enabled": False}}}
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

    Also keeps the memory that malloc frees in the process (components/serving/heap.py): the encoder's
    buffers are reused instead of trimmed and grown again at every batch.
    """
    gc.collect()
    gc.freeze()
    keep_freed_memory()


@bentoml.service(name="recloop", **SERVER_SETTINGS)
class RecloopService:
    bento_model = BentoModel(f"{PARAMS.registry.bento_model}:latest")

    def __init__(self) -> None:
        # Requests are tiny: more intra-op threads only fight the server's own threads for the cores.
        # OpenBLAS (numpy) too: with two threads on a busy machine one (items, dim) product took 16 ms
        # instead of 0.2 ms (threads spinning for a core).
        torch.set_num_threads(1)
        threadpool_limits(1)
        timeout.check_installed()  # stop here rather than serve with BentoML's leaking timer
        logs.install()  # after BentoML configured its loggers
        self.params = PARAMS
        # Always the default model's: `registry.domain` names what `recloop package` / `promote` act on.
        self.registry = for_domain(PARAMS.registry, None)
        # A tracking server that is down fails a reload or a look at the champion in seconds, not minutes.
        bound_http_requests(PARAMS.serve.registry_retries, PARAMS.serve.registry_timeout_seconds)
        try:
            stored = self.bento_model
        except Exception as e:  # BentoML reports a missing model as a failed BentoCloud lookup
            raise RecloopError(f"no model {PARAMS.registry.bento_model!r} in BentoML's store ({e}): "
                               "run `recloop promote`, which imports the registry's champion") from None
        # The log first: it creates the file and table the recommender's fresh-event reader follows.
        self.log = FeedbackLog(store_location(PARAMS.serve)).open()
        self.recommender = load_bento_recommender(stored, PARAMS.serve)
        # domain -> its model, replaced whole by a switch: at start the domains imported into BentoML's store,
        # then whatever the registry promotes (reload, the champion watch).
        self.domains: dict[str, BundleRecommender] = self._stored_domains()
        self.batcher = EncoderBatcher(observe=ENCODER_BATCH.observe)
        # Counters summed on the loop and flushed once a second (components/serving/tally.py); their series
        # listed at 0 from the start.
        self.tally = Tally()
        Tally.declare(RECOMMENDATIONS, get_args(Strategy))
        Tally.declare(FEEDBACK_EVENTS, EVENT_NAMES)
        self._switching = threading.Lock()
        self._warned: dict[str, float] = {}  # topic -> when it was last warned about
        self._stop = threading.Event()
        if PARAMS.serve.watch_seconds > 0:
            self._champions()  # the registry client's first use (seconds of imports) now, not under load
            threading.Thread(target=self._watch, name="champion-watch", daemon=True).start()
        settle_heap()

    def __is_ready__(self) -> bool:
        return self.recommender is not None

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self._stop.set()
        self.log.close()

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for a known user_id, an ad-hoc history, or a cold start (text, context, popularity)."""
        # One model for the whole request, even if a reload swaps it meanwhile: the promoted domain's that
        # context.domain names, else the default model's (as before domains existed).
        recommender = self._serving(request.context.domain)
        try:
            check_recommend(request, self.params.serve)
            if request.user_id is not None:
                self._refresh(recommender)
            if request.text is None:
                # A stored or fresh user, an ad-hoc history, popularity: under a millisecond, cheaper run
                # here than handed to a thread (each hand-over of the GIL between threads can cost a 5 ms
                # switch interval). Those that need the encoder share its calls (components/serving/batching.py).
                answer = recommender.start(request)
                if not isinstance(answer, RecommendResponse):
                    answer = await self.batcher.recommend(recommender, answer)
            else:
                # The language model (milliseconds): in a thread, so the event loop keeps serving the rest.
                answer = await asyncio.to_thread(recommender.recommend, request)
        except RequestError as e:
            return refusal(e, "/recommend")
        body = answer.model_dump_json()  # once: the client's answer and the log's impressions
        self.log.submit_served(answer, int(time.time()), request.context.domain, body)
        self.tally.add(RECOMMENDATIONS, answer.strategy)
        if answer.unknown_items:
            self.tally.add(UNKNOWN_ITEMS, None, len(answer.unknown_items))
        return Response(body, media_type="application/json")

    def _serving(self, domain: str | None) -> BundleRecommender:
        """The model that answers a request of `domain`: that domain's when it is promoted, else the default."""
        return self.recommender if domain is None else self.domains.get(domain, self.recommender)

    def _refresh(self, recommender: BundleRecommender) -> None:
        """Read the events any worker acknowledged, before this answer; an unreadable store leaves the
        answer on what was read so far (one warning a minute), rather than failing it."""
        try:
            recommender.fresh.refresh(self.log.commits)
        except FeedbackStoreUnavailable as e:
            self._warn("fresh", f"fresh state may be stale: {logs.one_line(e)}")

    def _warn(self, topic: str, message: str) -> None:
        """One warning a minute per topic: a store that stays down must not flood the log."""
        now = time.monotonic()
        if now - self._warned.get(topic, -float("inf")) > 60:
            self._warned[topic] = now
            logger.warning(message)

    @bentoml.api
    def similar_items(self, request: SimilarRequest, /) -> SimilarResponse:
        """Items like item_id (the model's item space), or matching free text (the language model)."""
        recommender = self.recommender
        try:
            check_similar(request, self.params.serve)
            return as_json(recommender.similar_items(request))
        except RequestError as e:
            return refusal(e, "/similar_items")

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /) -> FeedbackResponse:
        """Log impressions, clicks, likes, ratings...; answers only once they are durably written."""
        recommender = self.recommender
        try:
            check_feedback(request, self.params.serve)
            recommender.check_timestamps([e.timestamp for e in request.events])
        except RequestError as e:
            return refusal(e, "/feedback")
        now = int(time.time())
        rows = [{**event.model_dump(), "timestamp": event.timestamp or now, "source": "client",
                 "value": 1.0 if event.value is None else event.value, "model_version": recommender.version}
                for event in request.events]
        try:
            await asyncio.wrap_future(self.log.submit(rows))
        except Exception as e:  # the disk, not the client: 503 says "retry", and nothing was acknowledged
            self._warn("feedback", f"/feedback answers 503 until the feedback log can be written: {logs.one_line(e)}")
            return JSONResponse({"error": f"the feedback log could not be written ({e}); retry later"},
                                status_code=503)
        for event in request.events:
            self.tally.add(FEEDBACK_EVENTS, event.event)
        known = self._known([e.item_id for e in request.events], recommender)
        unknown = list(dict.fromkeys(e.item_id for e, ok in zip(request.events, known) if not ok))
        return as_json(FeedbackResponse(accepted=len(rows), durable=True, unknown_items=unknown))

    def _known(self, item_ids: list[str], recommender: BundleRecommender):
        """Which of `item_ids` a served catalog holds: the default model's, or any promoted domain's."""
        known = recommender.known_items(item_ids)
        for served in self.domains.values():
            known |= served.known_items(item_ids)
        return known

    @bentoml.api
    def info(self, ctx: bentoml.Context) -> InfoResponse:
        """Which model versions this worker serves (the default and each promoted domain's), the request
        limits, and whether the timeout patch is live."""
        recommender = self.recommender
        serve = self.params.serve
        domains = {domain: DomainInfo(model_version=r.version, mode=r.mode, scoring=r.scoring,
                                      content_prior=r.prior and r.prior.describe(), items=r.n_items,
                                      users=len(r.user_index))
                   for domain, r in self.domains.items()}
        return InfoResponse(model_version=recommender.version, mode=recommender.mode, scoring=recommender.scoring,
                            content_prior=recommender.prior and recommender.prior.describe(), domains=domains,
                            worker=os.getpid(),
                            timeout_patch=timeout.in_app(ctx.request.scope.get("app")),
                            watch_seconds=serve.watch_seconds, items=recommender.n_items,
                            users=len(recommender.user_index), encoder=recommender.bundle.encoder,
                            bundle_created_at=int(recommender.bundle.meta.get("created_at", 0)),
                            loaded_at=recommender.loaded_at,
                            limits={"max_k": serve.max_k, "max_history": serve.max_history,
                                    "max_text_chars": serve.max_text_chars,
                                    "max_feedback_events": serve.max_feedback_events,
                                    "max_payload_bytes": serve.max_payload_bytes})

    @bentoml.api
    async def reload(self, ctx: bentoml.Context) -> ReloadResponse:
        """Switch to the registry's current champions: the default model's and every promoted domain's, a
        domain promoted since the start included (needs `Authorization: Bearer <token>`)."""
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
            return refusal(refused, "/reload")
        start = time.perf_counter()
        try:
            # Load in a thread of its own: requests keep being answered by the current model meanwhile.
            previous, fresh, changed, failed = await asyncio.to_thread(self._switch)
        except Exception as e:  # the registry or the store, not the client: the old model keeps serving
            logger.warning("reload failed, still serving version %s: %s", self.recommender.version, logs.one_line(e))
            ctx.response.status_code = 503
            return JSONResponse({"error": f"could not load the champion ({logs.one_line(e)}); still serving "
                                          f"version {self.recommender.version}"}, status_code=503)
        return ReloadResponse(previous_version=previous.version, version=fresh.version, changed=changed,
                              seconds=round(time.perf_counter() - start, 3),
                              domains={d: r.version for d, r in self.domains.items()}, failed=failed)

    def _switch(self) -> tuple[BundleRecommender, BundleRecommender, bool, dict[str, str]]:
        """Load the registry's champions that are not served yet and swap them in:
        (previous default, current default, whether anything changed, domains that failed to load -> why)."""
        with self._switching:
            previous, served = self.recommender, self.domains
            imported = import_champion(self.registry)
            wanted = promoted_domains(self.registry)  # an unreadable registry fails the switch: nothing changes
            fresh = previous
            if str(imported.version) != previous.version:
                fresh = load_bento_recommender(bentoml.models.get(imported.tag), self.params.serve, previous.encoder)
            domains, failed = self._load_domains(wanted, served, fresh.encoder)
            changed = fresh is not previous or domains != served
            if changed:
                self.recommender, self.domains = fresh, domains
                settle_heap()
                logger.info("now serving version %s (was %s), domains %s", fresh.version, previous.version,
                            {d: r.version for d, r in domains.items()} or "none")
            return previous, fresh, changed, failed

    def _load_domains(self, wanted: dict[str, int], served: dict[str, BundleRecommender], encoder
                      ) -> tuple[dict[str, BundleRecommender], dict[str, str]]:
        """Each promoted domain's champion (`wanted`: domain -> version), reusing what `served` holds already;
        a domain whose new champion cannot be loaded keeps its previous model, if it had one."""
        domains: dict[str, BundleRecommender] = {}
        failed: dict[str, str] = {}
        for domain, version in wanted.items():
            current = served.get(domain)
            if current is not None and current.version == str(version):
                domains[domain] = current
                continue
            try:
                imported = import_champion(for_domain(self.registry, domain))
                domains[domain] = load_bento_recommender(bentoml.models.get(imported.tag), self.params.serve,
                                                         encoder, domain)
            except Exception as e:  # one broken domain must not stop the others, nor the default model
                failed[domain] = logs.one_line(e)
                self._warn(f"domain {domain}", f"domain {domain}: could not load version {version}: {failed[domain]}")
                if current is not None:
                    domains[domain] = current
        return domains, failed

    def _stored_domains(self) -> dict[str, BundleRecommender]:
        """At start: every domain's latest import in BentoML's store (as the default model comes from it)."""
        domains = {}
        for domain, model in stored_domains(self.registry).items():
            try:
                domains[domain] = load_bento_recommender(model, self.params.serve, self.recommender.encoder, domain)
            except Exception as e:  # serve the rest; a reload or the watch tries the registry's champion again
                logger.warning("domain %s is not served: %s could not be loaded: %s", domain, model.tag,
                               logs.one_line(e))
        return domains

    def _watch(self) -> None:
        """Follow the champion aliases: cheap registry queries every watch_seconds, a switch when one moved
        or a domain was promoted (or lost its champion)."""
        while not self._stop.wait(self.params.serve.watch_seconds):
            wanted = self._champions()
            if wanted is not None and wanted != self._served():
                try:
                    self._switch()
                except Exception as e:  # the old models keep serving; the next look tries again
                    logger.warning("could not switch to %s, still serving %s: %s", wanted, self._served(),
                                   logs.one_line(e))

    def _served(self) -> tuple[str, dict[str, str]]:
        return self.recommender.version, {d: r.version for d, r in self.domains.items()}

    def _champions(self) -> tuple[str, dict[str, str]] | None:
        """The registry's champion versions (the default model's, each promoted domain's), or None when the
        default has none or the registry cannot be reached."""
        try:
            version = alias_version(self.registry, CHAMPION)
            domains = promoted_domains(self.registry)
        except Exception as e:  # an unreachable registry must not stop the watch, nor the serving
            logger.warning("champion watch: the registry cannot be read (%s); still serving version %s",
                           logs.one_line(e), self.recommender.version)
            return None
        return None if version is None else (str(version), {d: str(v) for d, v in domains.items()})


RecloopService.add_asgi_middleware(PayloadLimit, max_bytes=PARAMS.serve.max_payload_bytes)
