"""Serving-time recommendations from a bundle: histories in, ranked and explained items out.

Known users' states (the encoder's last hidden state over their stored history), their best
`candidates` items and those items' like probabilities are computed once at load, so the common
request is a few array lookups. A user's history is their stored one, then every acknowledged
feedback event since the bundle was built (`fresh.AcknowledgedEvents`), then a request's ad-hoc
events, in time order. A user with new events gets their state and candidates recomputed once
(`histories.encode`, on arrays, no table) and cached until their next event; an ad-hoc history
runs the encoder on every request. `recommend` answers one request; `start` + `finish` answer many
with one encoder call, one retrieval and one product + top-k (the service batches concurrent requests
that way, components/serving/batching.py; the answers are the same). Stored states come from the model's own sequence code
(`history_sequences`); the tests check that the request path encodes a history the same way.

A model that carries a content prior (`models/content_prior.py`: zero-shot, or chosen after training) scores a
history by the prior's blend: (1 - w) x the model's score + w x the prior's, each standardised per user
over the whole catalog, with the same functions the benchmark and `recloop evaluate` use, so served
and measured scores agree (tests/serving/test_content_prior.py). It needs every item's score, so above
`serve.ann_above` items, where the ANN index finds the candidates, the prior is not applied: the model's
score alone ranks, and answers and /info say so (`scoring`).

Cold start (no usable history): with `text`, the language model matches it against the item
texts; without, the most popular items (in the context's or filter's domain when given).

Exploration (`serve.exploration`, components/policy/exploration.py): the k shown items are drawn from
the answer's candidates (the user's precomputed ones the filters let through, or the best `candidates`
allowed items), seeded by the request's `request_id` (a new random one when missing; the answer
carries it, so a replay with that id gets the same list). Each item carries its propensity (1.0 with
kind none, which shows the top k exactly as without exploration). An epsilon policy with fewer than 2k
candidates left by the filters serves that answer's top k with policy "none". With `fresh_share` > 0
the last slots show items of the fresh pool: the bundle's cold items (no training interactions) that
the filters allow and the candidates lack, the `fresh_pool` best by the same score, drawn uniformly.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from components.config import ExplorationConfig
from components.data.dataset import SplitData
from components.features.text import TextEncoder
from components.models.sequences import history_sequences, profile_codes
from components.models.vocab import codes
from components.policy import exploration as policies
from components.serving.ann import AnnIndex
from components.serving.bundle import Bundle
from components.serving.facts import FactFinder
from components.serving.fresh import AcknowledgedEvents, FreshEvent
from components.serving.histories import Interactions, VocabCodes, empty_interactions, encode, padded_table
from components.serving.schemas import (
    Because,
    Explanation,
    Filters,
    HistoryEvent,
    NamedFact,
    RecommendRequest,
    RecommendResponse,
    RequestError,
    SimilarItem,
    SimilarRequest,
    SimilarResponse,
)

# Ad-hoc history items without timestamps are spaced this far apart, ending at the request's time.
UNTIMED_SPACING_SECONDS = 60
EXPLAIN_ITEMS = 3
STATE_BATCH = 512
# The content prior's blend holds a few (states, items) temporaries: on big catalogs it takes fewer states at once.
PRIOR_CELLS = 1 << 25
# Request timestamps (history events, context, feedback) further than this outside the bundle's
# data and now are refused: milliseconds sent as seconds, or garbage, would skew the time features.
TIMESTAMP_SLACK_SECONDS = 5 * 365 * 86_400
# A plain item id in a history: an event with nothing but its item (one shared object; validating a
# HistoryEvent per id took a fifth of a batched ad-hoc answer's time).
BARE = HistoryEvent(item_id="")


@dataclass(frozen=True)
class UserState:
    """A user's state after their whole history, the history's item rows and their best candidates."""

    state: np.ndarray  # (D,)
    history: np.ndarray  # (n,) item rows in time order
    items: np.ndarray  # (c,) candidate rows, best first
    scores: np.ndarray  # (c,)
    likes: np.ndarray  # (c,) like probabilities
    events: int = 0  # acknowledged events included (fresh states are recomputed when more arrive)


@dataclass(frozen=True)
class Encoding:
    """A request waiting for the encoder: an ad-hoc history, or a known user's fresh state (`fresh_events` set:
    cached with that many acknowledged events, then answered from its candidates). `finish` encodes many at once."""

    request: RecommendRequest
    user_row: int | None
    unknown: list[str]
    history: Interactions
    fresh_events: int | None = None
    earlier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # item rows of acknowledged events too old for the encoder


@dataclass(frozen=True)
class Ranking:
    """A request to be scored against the whole catalog: by its state, or (state None) by text or popularity."""

    request: RecommendRequest
    user_row: int | None
    unknown: list[str]
    state: np.ndarray | None
    history: np.ndarray  # item rows, for exclude_seen and explanations


class BundleRecommender:
    """Everything a request needs, precomputed from a bundle; threads share it (the fresh-state cache
    is a dict of immutable entries, replaced whole)."""

    def __init__(self, bundle: Bundle, version: str, encoder: TextEncoder | None = None, candidates: int = 100,
                 fresh: AcknowledgedEvents | None = None, ann_above: int | None = None,
                 exploration: ExplorationConfig | None = None, domain: str | None = None):
        self.bundle = bundle
        self.domain = domain  # the promoted domain it serves (None: the default model); answers say it, with the mode
        self.mode = bundle.mode
        self.exploration = exploration or ExplorationConfig()
        self.policy = policies.describe_policy(self.exploration)
        self.exploring = self.exploration.kind != "none" or self.exploration.fresh_share > 0
        self.ann_above = ann_above  # catalogs larger than this retrieve through an ANN index (serve.ann_above)
        self.version = version
        self.encoder = encoder or TextEncoder(bundle.encoder, bundle.meta.get("encoder_max_length", 128))
        self.candidates = candidates
        self.fresh = fresh

    # -- building -------------------------------------------------------------------------------

    def prepare(self, load_encoder: bool = True) -> BundleRecommender:
        """Compute catalog vectors, known users' states, seen sets and filter indexes (seconds)."""
        bundle, model = self.bundle, self.bundle.trained.model.eval()
        items = bundle.items
        self.n_items = len(items)
        with torch.inference_mode():
            self.table = model.catalog()  # (N, D)
            self.padded = padded_table(self.table)
        self.like = model.task_heads["like"].predict_over_catalog(self.table)  # (state, row) pairs -> p(like)
        self.fact_finder = FactFinder(model, bundle.trained.vocab, self.table)
        self.vectors = self.table.numpy()
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = self.vectors / np.maximum(norms, 1e-12)
        self.item_index = pd.Index(items["item_id"].astype(str))
        # Dict lookups: a request's few ids cost microseconds, not a pandas index call each.
        self.item_row = {item: row for row, item in enumerate(self.item_index)}
        self.ids = items["item_id"].astype(str).tolist()
        self.titles = items["title"].astype(str).tolist()
        self.categories = [list(c) for c in items["categories"]]
        self.domains = items["domain"].astype(str).to_numpy()
        self.popularity = items["popularity"].to_numpy(np.float64)
        # The fresh pool of reserved exploration slots: items without training interactions (as in `recloop ope`).
        self.fresh_rows = np.flatnonzero(items["cold"].to_numpy(bool))
        self.codes = VocabCodes(bundle.trained.vocab)
        self.max_len = model.config.max_len
        if self.fresh is not None:
            self.fresh.attach(self.item_row, self.max_len + 1)
        self._index_categories()
        self._index_users()
        self.ann = AnnIndex.for_catalog(self.vectors, self.states, self.ann_above)  # calibrated on users' states
        # The prior's blend standardises over every item's score, which the ANN path never computes.
        self.prior = bundle.trained.prior if self.ann is None else None
        self.scoring = ("cosine" if model.config.cosine else "dot") + ("+content" if self.prior is not None else "")
        self._precompute_candidates()
        self.default_event = (bundle.histories["event"].mode().iloc[0] if len(bundle.histories) else "interaction")
        self.item_domain_codes = self.codes.domains(self.domains.tolist())  # (N,): plain ids' domain codes
        times = bundle.histories["timestamp"]
        self.time_range = (int(times.min()), int(times.max())) if len(times) else (int(time.time()),) * 2
        self.fresh_states: dict[str, UserState] = {}
        self.text_rows = np.linalg.norm(bundle.item_text, axis=1) > 0
        if load_encoder:
            self.encoder.encode(["warm up"])  # load the language model now, not in the first request
        self.loaded_at = time.time()
        return self

    def _index_categories(self) -> None:
        names = sorted({c for cats in self.categories for c in cats})
        self.category_index = pd.Index(names)
        lengths = np.fromiter((len(c) for c in self.categories), np.int64, self.n_items)
        codes = self.category_index.get_indexer([c for cats in self.categories for c in cats])
        # (categories, items) membership: a category filter is a union of rows.
        self.category_items = sp.csr_matrix((np.ones(len(codes), np.float32),
                                             (codes, np.repeat(np.arange(self.n_items), lengths))),
                                            shape=(len(names), self.n_items))
        self.domain_names = sorted(set(self.domains))

    def _index_users(self) -> None:
        """States of every user with a stored history, their seen items, and history rows in time order."""
        hist = self.bundle.histories
        users = pd.Index(pd.unique(hist["user_id"].astype(str)))
        profiles = self.bundle.users.assign(user_id=self.bundle.users["user_id"].astype(str))
        profiles = profiles.drop_duplicates("user_id").set_index("user_id").reindex(users).reset_index()
        frame = hist.assign(user_idx=users.get_indexer(hist["user_id"]),
                            item_idx=self.item_index.get_indexer(hist["item_id"]))
        frame = frame[frame["item_idx"] >= 0].sort_values(["user_idx", "timestamp"], kind="stable")
        vocab = self.bundle.trained.vocab
        self.user_index = users
        self.user_row = {user: row for row, user in enumerate(users)}
        self.profiles = profile_codes(profiles, vocab)  # (users, P)
        self.history_items = frame["item_idx"].to_numpy(np.int64)
        self.stored = Interactions(self.history_items, frame["timestamp"].to_numpy(np.int64),
                                   codes(frame["event"], vocab.events), frame["value"].to_numpy(np.float64),
                                   codes(frame["domain"], vocab.domains))
        self.history_start = np.searchsorted(frame["user_idx"].to_numpy(), np.arange(len(users) + 1))
        self.states = self._states(frame, profiles, np.arange(len(users)))

    def _precompute_candidates(self) -> None:
        """Each known user's `candidates` best items by retrieval score, with their like probabilities.

        Filtering keeps the order, so the first k candidates a request's filters let through are
        exactly the full catalog's top k; fewer than k left, and the request scores the whole
        catalog. A known user's answer then costs no model call at all.
        """
        stored = [self._stored_items(row) for row in range(len(self.states))] if self.prior is not None else None
        self.cand_items, self.cand_scores, self.cand_likes = self._best(self.states, stored)

    def scores(self, states: torch.Tensor, histories: Sequence[np.ndarray] | None) -> torch.Tensor:
        """(B, N) scores of every item after each (B, D) state: the model's, blended with its content prior
        when it has one (then `histories`, each user's item rows in time order, feed the prior)."""
        scores = states @ self.table.T
        if self.prior is None:
            return scores
        return self.prior.blend(scores, self.prior.history_profiles(histories))

    def _best(self, states: np.ndarray, histories: Sequence[np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, c) best candidate rows, their scores and like probabilities for (B, D) states after `histories`."""
        n = min(self.candidates, self.n_items)
        items, scores, likes = [], [], []
        with torch.inference_mode():
            step = STATE_BATCH if self.prior is None else max(1, min(STATE_BATCH, PRIOR_CELLS // max(self.n_items, 1)))
            for start, chunk in zip(range(0, len(states), step), torch.from_numpy(states).split(step)):
                batch = None if histories is None else histories[start:start + step]
                best = (torch.topk(self.scores(chunk, batch), n, dim=1) if self.ann is None
                        else self.ann.topk(chunk, n))  # (B, n), best first
                owner = torch.arange(len(chunk)).repeat_interleave(n)
                likes.append(self.like(chunk, owner, best.indices.reshape(-1)).reshape(len(chunk), n))
                items.append(best.indices)
                scores.append(best.values)
        empty = torch.zeros((0, n))
        return (torch.cat(items).numpy() if items else empty.long().numpy(),
                torch.cat(scores).numpy() if scores else empty.numpy(),
                torch.cat(likes).numpy() if likes else empty.numpy())

    def _states(self, frame: pd.DataFrame, profiles: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """(len(rows), D) user vectors: the encoder's state after each user's latest history."""
        model = self.bundle.trained.model
        data = SplitData(items=self.bundle.items, users=profiles, train=frame,
                         valid=frame.iloc[:0], test=frame.iloc[:0])
        sequences = history_sequences(data, self.bundle.trained.vocab, "valid", model.config.max_len)
        with torch.inference_mode():
            parts = [model.last_states(sequences.batch(chunk), self.table)
                     for chunk in torch.as_tensor(rows, dtype=torch.long).split(STATE_BATCH)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.table.shape[1]), np.float32)

    # -- requests -------------------------------------------------------------------------------

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Top-k for a known user, an ad-hoc history, or a cold start; see the module docstring."""
        step = self.start(request)
        return step if isinstance(step, RecommendResponse) else self.finish([step])[0]

    def start(self, request: RecommendRequest) -> RecommendResponse | Encoding:
        """The answer when no encoder call is needed (a stored or cached user, a cold start), else the
        request's `Encoding` for `finish`, which runs one encoder call for many (components/serving/batching.py)."""
        user_row = self._user_row(request.user_id)
        events, unknown = self._history_events(request)
        if events:
            self.check_timestamps([e.timestamp for _, e in events] + [request.context.timestamp])
            history, _, earlier = self._history(request.user_id, user_row)
            return Encoding(request, user_row, unknown, history.then(self._request_interactions(request, events)),
                            earlier=earlier)
        if self._stale(request.user_id):
            history, n_events, earlier = self._history(request.user_id, user_row)
            if len(history):
                return Encoding(request, user_row, unknown, history, n_events, earlier)
        step = self._known(request, user_row, unknown, self.user_state(request.user_id, user_row))
        return step if isinstance(step, RecommendResponse) else self._rank([step])[0]

    def finish(self, pending: Sequence[Encoding]) -> list[RecommendResponse]:
        """Answers to `start`'s encodings, in order: one encoder call for all their histories, one retrieval
        for the fresh users' candidates, one product and top-k for the rest (the same answers as one by one)."""
        profiles = np.stack([self._profile(p.user_row) for p in pending])
        states = encode(self.bundle.trained.model, self.bundle.trained.vocab, self.padded,
                        [p.history.latest(self.max_len + 1) for p in pending], profiles)
        fresh = [i for i, p in enumerate(pending) if p.fresh_events is not None]
        # Seen items in full (exclude_seen, history_used); the order matters only in the last max_len (explanations).
        seen = [np.concatenate([p.earlier, p.history.items]) if len(p.earlier) else p.history.items for p in pending]
        steps: list[RecommendResponse | Ranking] = [
            Ranking(p.request, p.user_row, p.unknown, states[i], seen[i]) for i, p in enumerate(pending)]
        if fresh:
            items, scores, likes = self._best(states[fresh], [seen[i] for i in fresh])
            for row, i in enumerate(fresh):
                p = pending[i]
                known = UserState(states[i], seen[i], items[row], scores[row], likes[row], p.fresh_events)
                self.fresh_states[p.request.user_id] = known
                steps[i] = self._known(p.request, p.user_row, p.unknown, known)
        ranked = iter(self._rank([s for s in steps if isinstance(s, Ranking)]))
        return [s if isinstance(s, RecommendResponse) else next(ranked) for s in steps]

    def user_state(self, user_id: str | None, user_row: int | None) -> UserState | None:
        """The user's state after stored history + acknowledged events as last computed: precomputed when
        nothing arrived since the bundle, cached until the next event otherwise (`start` recomputes a
        stale one first); None for nobody known."""
        cached = self.fresh_states.get(user_id) if user_id is not None else None
        if cached is not None:
            return cached
        if user_row is None:
            return None
        return UserState(self.states[user_row], self._stored_items(user_row), self.cand_items[user_row],
                         self.cand_scores[user_row], self.cand_likes[user_row])

    def _stale(self, user_id: str | None) -> bool:
        """Whether the user has acknowledged events that no cached state includes yet."""
        if self.fresh is None or user_id is None:
            return False
        count = self.fresh.count(user_id)
        if not count:
            return False
        cached = self.fresh_states.get(user_id)
        return cached is None or cached.events != count

    def _known(self, request: RecommendRequest, user_row: int | None, unknown: list[str],
               known: UserState | None) -> RecommendResponse | Ranking:
        """A stored or fresh user's answer from their candidates, or what to rank over the whole catalog."""
        if known is None:
            return Ranking(request, user_row, unknown, None, np.zeros(0, np.int64))
        picked = self._from_candidates(request, known)
        if picked is None:
            return Ranking(request, user_row, unknown, known.state, known.history)
        fresh = self._fresh_pool(request, picked[0], known.history, self._row_scores(known.state, known.history))
        top, scores, likes, shown = self._explore(request, *picked, fresh)
        if likes is None:  # a fresh item is shown: its like probability was not precomputed
            likes = self._likes([known.state], [top])[0]
        return self._answer(request, user_row, "history", top, scores, likes, shown, known.history, unknown)

    def _rank(self, jobs: Sequence[Ranking]) -> list[RecommendResponse]:
        """Answers scored over the whole catalog; the jobs with a state share one product and one top-k."""
        answers: dict[int, RecommendResponse] = {}
        # Exploring draws from the best `candidates` allowed items (at least 2k), not only the top k.
        n_pool = [max(self.candidates, 2 * j.request.k) if self.exploring else j.request.k for j in jobs]
        allowed = [self._allowed(j.request.filters, j.request.context.domain if j.state is None else None)
                   for j in jobs]
        for j, mask in zip(jobs, allowed):
            if j.request.exclude_seen and len(j.history):
                mask[j.history] = False
        stated = [i for i, j in enumerate(jobs) if j.state is not None]
        pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # job -> (pool rows, their scores)
        if stated and self.ann is None:
            states = torch.from_numpy(np.stack([jobs[i].state for i in stated]))
            masks = torch.from_numpy(np.stack([allowed[i] for i in stated]))
            sizes = [min(n_pool[i], int(np.count_nonzero(allowed[i]))) for i in stated]
            with torch.inference_mode():
                scores = self.scores(states, [jobs[i].history for i in stated])
                scores = scores.masked_fill_(~masks, -np.inf)  # (B, N)
                best = torch.topk(scores, max(sizes), dim=1)
            for row, (i, size) in enumerate(zip(stated, sizes)):
                pools[i] = best.indices[row, :size].numpy(), best.values[row, :size].numpy()
        for i in stated:
            if i not in pools:  # the ANN index: one query per state
                scores = self.ann.scores(jobs[i].state, allowed[i], n_pool[i])
                pool = top_k(scores, allowed[i], n_pool[i])
                pools[i] = pool, scores[pool]
        fresh = {i: self._fresh_pool(jobs[i].request, pools[i][0], jobs[i].history,
                                     self._row_scores(jobs[i].state, jobs[i].history), allowed[i]) for i in stated}
        shown = {i: self._explore(jobs[i].request, *pools[i], None, fresh[i]) for i in stated}
        if stated:
            likes = self._likes([jobs[i].state for i in stated], [shown[i][0] for i in stated])
            for i, like in zip(stated, likes):
                j, (top, scores, _, served) = jobs[i], shown[i]
                answers[i] = self._answer(j.request, j.user_row, "history", top, scores, like, served, j.history,
                                          j.unknown)
        for i, j in enumerate(jobs):
            if j.state is not None:
                continue
            mask = allowed[i]
            if j.request.text is not None:
                strategy, scores = "text", self.bundle.item_text @ self._encode(j.request.text)
                mask &= self.text_rows
            else:
                strategy, scores = "popularity", self.popularity.copy()
            pool = top_k(scores, mask, n_pool[i])
            fresh = self._fresh_pool(j.request, pool, j.history, lambda rows, s=scores: s[rows], mask)
            top, _, _, served = self._explore(j.request, pool, scores[pool], None, fresh)
            answers[i] = self._answer(j.request, j.user_row, strategy, top, scores[top], None, served, j.history,
                                      j.unknown)
        return [answers[i] for i in range(len(jobs))]

    def _from_candidates(self, request: RecommendRequest,
                         known: UserState) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(items, scores, like probabilities) from the user's precomputed candidates the filters let
        through (the first k; all of them when exploring), or None when fewer than k are left."""
        allowed = self._allowed(request.filters, None)
        if request.exclude_seen and len(known.history):
            allowed[known.history] = False
        keep = np.flatnonzero(allowed[known.items])
        if not self.exploring:
            keep = keep[:request.k]
        if len(keep) < min(request.k, int(np.count_nonzero(allowed))):
            return None
        return known.items[keep], known.scores[keep], known.likes[keep]

    def _fresh_pool(self, request: RecommendRequest, candidates: np.ndarray, history: np.ndarray,
                    score: Callable[[np.ndarray], np.ndarray], allowed: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, scores) of the fresh items the request's reserved slots may show: the bundle's cold items
        its filters (`allowed`, else the request's) let through, unseen, not among `candidates`; None
        without fresh slots."""
        if not self.exploration.fresh_share:
            return None
        allowed = self._allowed(request.filters, None) if allowed is None else allowed.copy()
        if request.exclude_seen and len(history):
            allowed[history] = False
        allowed[candidates] = False
        rows = self.fresh_rows[allowed[self.fresh_rows]]
        return rows, np.asarray(score(rows), np.float64)

    def _row_scores(self, state: np.ndarray, history: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The scores of given item rows after `state`, as `scores` ranks them (the fresh pool's)."""
        if self.prior is None:
            return lambda rows: self.vectors[rows] @ state

        def blended(rows: np.ndarray) -> np.ndarray:  # only asked for when the answer has fresh slots
            with torch.inference_mode():
                return self.scores(torch.from_numpy(state)[None], [history])[0].numpy()[rows]

        return blended

    def _explore(self, request: RecommendRequest, items: np.ndarray, scores: np.ndarray, likes: np.ndarray | None,
                 fresh: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[str, str, np.ndarray]]:
        """The k shown items (slot order), their scores and likes (None when a fresh item is shown), and
        (request id, policy, propensities); `items` are the candidates best first, `fresh` the fresh
        pool's rows and scores (`_fresh_pool`)."""
        request_id = request.request_id or uuid.uuid4().hex
        k = min(request.k, len(items))
        cfg = self.exploration
        if not self.exploring or (cfg.kind == "epsilon" and cfg.epsilon > 0 and len(items) < 2 * k):
            return (items[:k], scores[:k], None if likes is None else likes[:k],
                    (request_id, "none", np.ones(k)))
        rows, fresh_scores = fresh if fresh is not None and len(fresh[0]) else (np.zeros(0, np.int64), None)
        slate = policies.rank(cfg, scores, k, request_id, fresh_scores)
        pool = np.concatenate([items, rows]).astype(np.int64)
        pool_scores = np.concatenate([np.asarray(scores, np.float64), np.zeros(0) if fresh_scores is None
                                      else fresh_scores])
        fresh_shown = bool((slate.items >= len(items)).any())
        return (pool[slate.items], pool_scores[slate.items],
                None if likes is None or fresh_shown else likes[slate.items],
                (request_id, self.policy, slate.propensity))

    def _answer(self, request: RecommendRequest, user_row: int | None, strategy: str, top: np.ndarray,
                scores: np.ndarray, like: np.ndarray | None, shown: tuple[str, str, np.ndarray],
                history: np.ndarray, unknown: list[str]) -> RecommendResponse:
        # One validation of plain dicts: pydantic's compiled validator builds the 11 models in half the
        # time that 11 Python-level model_construct calls take (22 vs 45 us).
        request_id, policy, propensity = shown
        likes = [None] * len(top) if like is None else like.tolist()
        items = [{"item_id": self.ids[i], "title": self.titles[i], "rank": slot + 1, "score": score,
                  "categories": self.categories[i], "like_prob": like_prob, "propensity": p,
                  "explanation": self._explain(strategy, i, history, score) if request.explain else None}
                 for slot, (i, score, like_prob, p) in enumerate(zip(top.tolist(), scores.tolist(), likes,
                                                                     propensity.tolist()))]
        return RecommendResponse.model_validate({
            "request_id": request_id, "user_id": request.user_id, "strategy": strategy,
            "known_user": user_row is not None, "history_used": len(history), "unknown_items": unknown,
            "model_version": self.version, "domain": self.domain, "mode": self.mode, "scoring": self.scoring,
            "policy": policy,
            "items": items})

    def similar_items(self, request: SimilarRequest) -> SimilarResponse:
        """Items like `item_id` (item-tower cosine), or matching `text` (language-model cosine)."""
        allowed = self._allowed(request.filters, None)
        if request.item_id is not None:
            row = self.item_row.get(request.item_id)
            if row is None:
                raise RequestError(f"item {request.item_id!r} is not in the catalog of {self.n_items:,} items; "
                                   "for an item the model has not seen, send its description as text", status=404)
            scores, by = self.unit @ self.unit[row], "item"
            allowed[row] = False
        else:
            scores, by = self.bundle.item_text @ self._encode(request.text), "text"
            allowed &= self.text_rows
        top = top_k(scores, allowed, request.k)
        items = [SimilarItem(item_id=self.ids[i], title=self.titles[i], rank=rank + 1, score=float(scores[i]),
                             categories=self.categories[i]) for rank, i in enumerate(top)]
        return SimilarResponse(request_id=uuid.uuid4().hex, by=by, model_version=self.version, items=items)

    def known_items(self, item_ids: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of `item_ids` are in the catalog."""
        return np.array([i in self.item_row for i in item_ids], bool)

    # -- pieces -----------------------------------------------------------------------------------

    def _user_row(self, user_id: str | None) -> int | None:
        return None if user_id is None else self.user_row.get(user_id)

    def _stored_items(self, user_row: int | None) -> np.ndarray:
        if user_row is None:
            return np.zeros(0, np.int64)
        return self.history_items[self.history_start[user_row]:self.history_start[user_row + 1]]

    def _history(self, user_id: str | None, user_row: int | None) -> tuple[Interactions, int, np.ndarray]:
        """Stored history then acknowledged events (catalog items only; the latest max_len + 1 of them), in
        time order; how many acknowledged events that read; and the item rows of the older ones."""
        if user_row is None:
            stored = empty_interactions()
        else:
            start, end = self.history_start[user_row], self.history_start[user_row + 1]
            stored = Interactions(*(column[start:end] for column in (
                self.stored.items, self.stored.timestamps, self.stored.events, self.stored.values,
                self.stored.domains)))
        none = np.zeros(0, np.int64)
        if self.fresh is None or user_id is None:
            return stored, 0, none
        events = self.fresh.of(user_id)
        earlier = np.frombuffer(events.earlier, np.intc).astype(np.int64) if events.earlier else none
        return stored.then(self._fresh_interactions(events.recent)), events.count, earlier

    def _fresh_interactions(self, events: list[FreshEvent]) -> Interactions:
        """Acknowledged events as arrays (attached: catalog items only, rows resolved), in one pass over them
        (a fresh user's history holds up to max_len + 1 of them, read on the event loop)."""
        if not events:
            return empty_interactions()
        rows, timestamps, names, values, domains = zip(*[(e.row, e.timestamp, e.event, e.value, e.domain)
                                                         for e in events])
        rows = np.array(rows, np.int64)
        domain_codes = self.item_domain_codes[rows]  # an event without a domain is in its item's
        named = [i for i, domain in enumerate(domains) if domain]
        if named:
            domain_codes[named] = self.codes.domains([domains[i] for i in named])
        return Interactions(rows, np.array(timestamps, np.int64), self.codes.events(names),
                            np.array(values, np.float64), domain_codes)

    def _request_interactions(self, request: RecommendRequest,
                              events: list[tuple[int, HistoryEvent]]) -> Interactions:
        """A request's ad-hoc events; untimed ones spaced a minute apart, ending at the request's time."""
        now = request.context.timestamp or int(time.time())
        n = len(events)
        rows = events_items(events)
        if all(e is BARE for _, e in events):  # plain ids (the common request): the same codes, on arrays
            domain = request.context.domain
            return Interactions(
                rows, now - np.arange(n - 1, -1, -1, dtype=np.int64) * UNTIMED_SPACING_SECONDS,
                self.codes.events([self.default_event]).repeat(n), np.full(n, np.nan),
                self.item_domain_codes[rows] if not domain else self.codes.domains([domain]).repeat(n))
        return Interactions(
            events_items(events),
            np.fromiter((e.timestamp if e.timestamp is not None else now - (n - 1 - j) * UNTIMED_SPACING_SECONDS
                         for j, (_, e) in enumerate(events)), np.int64, n),
            self.codes.events([e.event or self.default_event for _, e in events]),
            np.fromiter((np.nan if e.value is None else e.value for _, e in events), np.float64, n),
            self.codes.domains([e.domain or request.context.domain or self.domains[r] for r, e in events]))

    def _profile(self, user_row: int | None) -> np.ndarray:
        return self.profiles[user_row] if user_row is not None else np.zeros(self.profiles.shape[1], np.int64)

    def check_timestamps(self, timestamps: Sequence[int | None]) -> None:
        """400 for a timestamp far outside the bundle's data and now (seconds since the epoch)."""
        low = self.time_range[0] - TIMESTAMP_SLACK_SECONDS
        high = max(self.time_range[1], int(time.time())) + TIMESTAMP_SLACK_SECONDS
        bad = [t for t in timestamps if t is not None and not low <= t <= high]
        if bad:
            raise RequestError(f"timestamp {bad[0]} is far outside the data ({self.time_range[0]}..now): "
                               f"send seconds since the epoch (not milliseconds) between {low} and {high}")

    def _history_events(self, request: RecommendRequest) -> tuple[list[tuple[int, HistoryEvent]], list[str]]:
        """Known (item row, event) pairs in request order (a plain id pairs with `BARE`), and the unknown item
        ids (reported, ignored)."""
        if not request.history:
            return [], []
        events, unknown = [], []
        for entry in request.history:
            plain = isinstance(entry, str)
            item = entry if plain else entry.item_id
            row = self.item_row.get(item)
            if row is None:
                unknown.append(item)
            else:
                events.append((row, BARE if plain else entry))
        return events, list(dict.fromkeys(unknown))

    def _allowed(self, filters: Filters, context_domain: str | None) -> np.ndarray:
        """Boolean mask of items the filters let through (a cold start also keeps to the context's domain)."""
        allowed = np.ones(self.n_items, bool)
        if filters.exclude_items:
            allowed[[r for r in map(self.item_row.get, filters.exclude_items) if r is not None]] = False
        if filters.categories is not None:
            codes = self.category_index.get_indexer(filters.categories)
            if (codes < 0).any():
                bad = [c for c, code in zip(filters.categories, codes) if code < 0]
                raise RequestError(f"unknown categories {bad}; known: {_shown(self.category_index.tolist())}")
            allowed &= np.asarray(self.category_items[codes].sum(0)).ravel() > 0
        domain = filters.domain or (context_domain if context_domain in self.domain_names else None)
        if filters.domain is not None and filters.domain not in self.domain_names:
            raise RequestError(f"unknown domain {filters.domain!r}; known: {_shown(self.domain_names)}")
        if domain is not None:
            allowed &= self.domains == domain
        return allowed

    def _encode(self, text: str) -> np.ndarray:
        return self.encoder.encode([text])[0]

    def _likes(self, states: list[np.ndarray], tops: list[np.ndarray]) -> list[np.ndarray]:
        """The like head's probability for each picked item after each history, in one call for all."""
        sizes = [len(top) for top in tops]
        owner = torch.from_numpy(np.repeat(np.arange(len(states)), sizes))
        probs = self.like(torch.from_numpy(np.stack(states)), owner, torch.from_numpy(np.concatenate(tops))).numpy()
        return np.split(probs, np.cumsum(sizes)[:-1])

    def _explain(self, strategy: str, item: int, history: np.ndarray, score: float) -> Explanation:
        if strategy == "text":
            return Explanation(reason=f"its description matches the text (cosine {score:.2f})")
        if strategy == "popularity":
            return Explanation(reason=f"popular: {int(self.popularity[item]):,} training interactions")
        recent = history[-self.bundle.trained.model.config.max_len:]
        similarity = self.unit[recent] @ self.unit[item]
        order = np.argsort(-similarity, kind="stable")
        best: dict[int, float] = {}  # an item seen twice counts once, with its (equal) similarity
        for i, s in zip(recent[order].tolist(), similarity[order].tolist()):
            best.setdefault(i, s)
            if len(best) == EXPLAIN_ITEMS:
                break
        because = [Because(item_id=self.ids[i], title=self.titles[i], similarity=round(s, 4))
                   for i, s in best.items()]
        counts = np.asarray(self.category_items[:, recent].sum(1)).ravel()
        mine = self.category_index.get_indexer(self.categories[item])
        shared = sorted((c for c in mine if c >= 0 and counts[c] > 0), key=lambda c: -counts[c])
        attributes = [f"{self.category_index[c]} ({int(counts[c])} of your last {len(recent)})" for c in shared]
        facts = [NamedFact(text=f.text(self.titles[f.history_item]), kind=f.kind, relation=f.relation,
                           item_id=self.ids[f.history_item], title=self.titles[f.history_item],
                           contribution=round(f.contribution, 4)) for f in self.fact_finder.facts(item, recent)]
        return Explanation(reason="close to these history items in the model's item space",
                           because_of=because, attributes=attributes, facts=facts)


def events_items(events: list[tuple[int, HistoryEvent]]) -> np.ndarray:
    return np.fromiter((r for r, _ in events), np.int64, len(events))


def top_k(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best allowed scores, best first (fewer when fewer are allowed)."""
    k = min(k, int(np.count_nonzero(allowed)))
    if k == 0:
        return np.zeros(0, np.int64)
    masked = np.where(allowed, scores, -np.inf)
    # torch.topk selects and sorts in one pass: a fraction of numpy's argpartition + argsort here.
    return torch.topk(torch.from_numpy(masked), k).indices.numpy()


def _shown(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")
