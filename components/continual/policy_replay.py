"""A replay simulator from real data: serve lists to users as they arrive, and let their real later
ratings decide the clicks.

Per window of the stream (after the cutoff), the champion is grown to the items seen so far
(`open_window` of the continual loop: new items are placed by their text). Users with a history
arrive in time order: a request at each of their first interactions on up to `requests_per_user`
distinct days of the window. A request ranks the items already seen by then (an item enters the
catalog at its first interaction anywhere), the user's earlier items removed, by the model's score
from the user's history strictly before the request (the prequential split of the evaluator). The
top `candidates` are what a policy explores over; fresh items (first seen `fresh_days` before the
request or later) outside them can fill reserved slots.

Clicks: a served item is relevant when the user rates it >= `min_rating` later in the same window
(at or after the request); a relevant item at position j (from 0) is clicked with probability
1 / (j + 1) ** position_bias, the chance that the user looks that far (a position-based click model:
the item-position model that the off-policy estimators assume holds here by construction). One
uniform draw per (request, slot) is shared by every policy, so policies differ only by what they
show. A policy's true value on a request is exact: sum over slots of weight * look probability *
(the policy's probability of a relevant item there).

What it can tell: how exploration trades clicks for coverage and first clicks of new items, and
whether off-policy estimates recover a policy's value, on real users, items and timing. What it
cannot: a rating is not a click (users rated what they chose to watch, not what was shown); items
the user never rated count as not relevant though the user might have liked them, which biases
every value low and favours policies that show what users found anyway; the position bias is
assumed, not measured; a shown list does not change what the user does next.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.config import ExplorationConfig, ReplayConfig
from components.continual.window_split import sample_users
from components.continual.window_step import OpenWindow, open_window
from components.data.dataset import SplitData
from components.data.live_windows import Stream
from components.evaluation.prequential import prequential_split
from components.features.text import TextOf
from components.models.artifacts import TrainedModel
from components.models.scoring import RecloopScorer
from components.policy.exploration import draw, marginals

SECONDS_PER_DAY = 86_400


@dataclass
class Request:
    """One arrival: the candidates and fresh items it may be shown (pool order), and which are relevant."""

    request_id: str
    user_id: str
    timestamp: int
    pool: np.ndarray  # (candidates + fresh,) item_idx in the window's catalog
    scores: np.ndarray  # (candidates + fresh,) the model's scores
    candidates: int  # the first `candidates` of the pool are the model's top; the rest are fresh
    relevant: np.ndarray  # (candidates + fresh,) bool


@dataclass
class Window:
    """A window's requests, on the catalog grown to it."""

    index: int
    opened: OpenWindow
    requests: list[Request]
    new_items: np.ndarray  # item_idx first seen in this window


def look(k: int, position_bias: float) -> np.ndarray:
    """Probability that a user looks at each position (from 0)."""
    return 1.0 / (np.arange(k) + 1.0) ** position_bias


def request_rows(window: pd.DataFrame, known: set[str], cfg: ReplayConfig, seed: int) -> pd.DataFrame:
    """The requests of a window: users with a history, at their first interaction on each of their
    first `requests_per_user` days here; a seeded sample of `max_users` users."""
    rows = window[window["user_id"].astype(str).isin(known)].sort_values(["timestamp", "user_id"], kind="stable")
    rows = rows.assign(day=rows["timestamp"] // SECONDS_PER_DAY)
    first = rows.drop_duplicates(["user_id", "day"])
    first = first[first.groupby("user_id").cumcount() < cfg.requests_per_user]
    users = pd.unique(first["user_id"])
    keep = set(users[sample_users(np.arange(len(users)), cfg.max_users, seed)]) if cfg.max_users else set(users)
    return first[first["user_id"].isin(keep)].drop(columns="day").reset_index(drop=True)


def open_windows(stream: Stream, catalog: pd.DataFrame, text_of: TextOf, champion: TrainedModel,
                 base: SplitData, cfg: ReplayConfig, seed: int) -> Iterator[Window]:
    """The first `cfg.windows` windows of `stream` served by `champion` (trained on `base`, the history
    before the cutoff): each window's requests with their candidates and relevant items."""
    history = stream.past
    for k, _, _, rows in stream.windows(cfg.windows):
        yield window_requests(champion, base.items, catalog, history, rows, base.users, text_of, cfg, seed, k)
        history = pd.concat([history, rows], ignore_index=True)


def window_requests(champion: TrainedModel, items: pd.DataFrame, catalog: pd.DataFrame, history: pd.DataFrame,
                    rows: pd.DataFrame, users: pd.DataFrame, text_of: TextOf, cfg: ReplayConfig, seed: int,
                    k: int) -> Window:
    """Window `k` (`rows`, after `history`) served by `champion`; `items` starts with the champion's items."""
    opened = open_window(champion, items, catalog, history, rows, users, text_of, holdout_share=1.0)
    return Window(k, opened, _requests(opened, history, rows, cfg, seed + k, k),
                  np.arange(len(champion.item_ids), opened.data.n_items))


def _requests(opened: OpenWindow, history: pd.DataFrame, rows: pd.DataFrame, cfg: ReplayConfig, seed: int,
              k: int) -> list[Request]:
    data = opened.data
    asked = request_rows(rows, set(history["user_id"].astype(str)), cfg, seed)
    if asked.empty:
        return []
    index = pd.Index(data.items["item_id"].astype(str))
    users = pd.Index(data.users["user_id"].astype(str))
    targets = asked.assign(user_idx=users.get_indexer(asked["user_id"].astype(str)),
                           item_idx=index.get_indexer(asked["item_id"].astype(str)))
    # Every interaction (the window's too) is history for the requests after it.
    every_row = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    pre = prequential_split(dataclasses.replace(data, train=every_row, valid=data.valid.iloc[:0], test=targets),
                            seed=seed)
    scores = RecloopScorer(opened.champion, "champion").fit(data).score(pre.data, np.arange(len(targets)), "test")
    scores = scores.numpy().astype(np.float64)
    every = pd.concat([history, rows], ignore_index=True)
    every_idx = index.get_indexer(every["item_id"].astype(str))
    first_seen = np.full(len(index), np.iinfo(np.int64).max)
    np.minimum.at(first_seen, every_idx, every["timestamp"].to_numpy(np.int64))
    good = rows[rows["value"] >= cfg.min_rating]
    good = good.assign(user_id=good["user_id"].astype(str), item_idx=index.get_indexer(good["item_id"].astype(str)))
    liked_by = {u: g for u, g in good.groupby("user_id")}
    seen = pre.data.train.groupby("user_idx")["item_idx"].apply(np.asarray)
    out = []
    for r, row in enumerate(targets.itertuples(index=False)):
        t = int(row.timestamp)
        allowed = first_seen < t
        allowed[seen.get(r, np.zeros(0, np.int64))] = False
        s = np.where(allowed, scores[r], -np.inf)
        n = min(cfg.candidates, int(allowed.sum()))
        top = np.argsort(-s, kind="stable")[:n]
        fresh = np.flatnonzero(allowed & (first_seen >= t - cfg.fresh_days * SECONDS_PER_DAY))
        fresh = np.setdiff1d(fresh, top)
        pool = np.concatenate([top, fresh])
        later = liked_by.get(str(row.user_id))
        relevant = np.zeros(len(pool), bool)
        if later is not None:
            relevant = np.isin(pool, later["item_idx"].to_numpy()[later["timestamp"].to_numpy() >= t])
        out.append(Request(f"w{k}:u{row.user_id}:t{t}", str(row.user_id), t, pool, scores[r][pool], n, relevant))
    return out


@dataclass
class Served:
    """One policy's lists on a set of requests: the log (one row per slot) and the true value per request."""

    log: pd.DataFrame  # request_id, user_id, item_idx, position, propensity, reward, score
    value: np.ndarray  # (requests,) expected position-weighted reward under the click model
    clicks: np.ndarray  # (requests,) clicks drawn


def serve(requests: list[Request], policy: ExplorationConfig, cfg: ReplayConfig, weights: np.ndarray,
          seed: int) -> Served:
    """Serve every request with `policy` (randomised by the request id and `seed`), draw its clicks."""
    seen = look(cfg.k, cfg.position_bias)
    frames, values, clicks = [], np.zeros(len(requests)), np.zeros(len(requests))
    for i, req in enumerate(requests):
        rid = f"{req.request_id}:s{seed}"
        main, fresh = req.scores[:req.candidates], req.scores[req.candidates:]
        table = marginals(policy, main, cfg.k, rid, fresh)
        slate = draw(policy, main, cfg.k, rid, fresh)
        k = len(slate)
        # Common random numbers: the same look draws for every policy on this request.
        u = np.random.default_rng([seed, i]).random(cfg.k)[:k]
        reward = (req.relevant[slate] & (u < seen[:k])).astype(np.float64)
        values[i] = float((weights[:k] * seen[:k] * (req.relevant @ table[:, :k])).sum())
        clicks[i] = reward.sum()
        frames.append(pd.DataFrame({"request_id": rid, "user_id": req.user_id, "request": i, "timestamp": req.timestamp,
                                    "item_idx": req.pool[slate], "pool_index": slate, "position": np.arange(k),
                                    "propensity": table[slate, np.arange(k)],
                                    # per-draw probability of the item (in the list at all, / k): the learner's beta
                                    "behaviour": table[slate].sum(1) / k, "reward": reward,
                                    "score": req.scores[slate]}))
    log = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Served(log, values, clicks)


def target_probabilities(requests: list[Request], log: pd.DataFrame, target: ExplorationConfig,
                         cfg: ReplayConfig, seed: int, reward_model=None) -> pd.DataFrame:
    """`log` with the target policy's probability of each logged item at its position, and, given a
    fitted `RewardModel` (components/policy/ope.py), DR's `predicted` and `direct` columns."""
    prob, predicted, direct = np.zeros(len(log)), np.zeros(len(log)), np.zeros(len(log))
    for i, rows in log.groupby("request", sort=False).indices.items():
        req = requests[i]
        table = marginals(target, req.scores[:req.candidates], cfg.k, f"{req.request_id}:s{seed}",
                          req.scores[req.candidates:])
        pool_index, position = log["pool_index"].to_numpy()[rows], log["position"].to_numpy()[rows]
        prob[rows] = table[pool_index, position]
        if reward_model is not None:
            predicted[rows] = reward_model.predict(position, req.scores[pool_index])
            k = table.shape[1]
            # The model's expected reward of each pool item at each position, weighed by the target.
            q = reward_model.predict(np.repeat(np.arange(k), len(req.pool)), np.tile(req.scores, k))
            direct[rows] = (table * q.reshape(k, -1).T).sum(0)[position]
    return log.assign(target=prob, predicted=predicted, direct=direct)
