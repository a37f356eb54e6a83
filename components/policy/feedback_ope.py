"""`recloop ope`: how a challenger model + policy would have done on the served lists of the feedback log.

The log's served impressions (source "server") are the logging policy's lists, each item with the
propensity the service logged (a log written without exploration has none: every propensity is 1,
and only a target that shows the same lists can be evaluated). A slot's reward is a client event of
`policy.reward_events` naming the same request and item. The champion's value is the logged one
(the policy that served); the challenger's is estimated with IPS / SNIPS / DR (components/policy/ope.py):
for each logged request, the challenger ranks the catalog from the user's history before the request
(the split's interactions and the log's client feedback), drops the user's seen items, takes its top
`candidates` and applies its policy (`policy.target`; its fresh items are the catalog's cold ones),
which gives its probability of each logged item at its logged position. Requests of users the split
does not know are skipped (counted). The report goes to `<reports>/ope/ope.json` and `.md`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.atomic import write_text
from components.config import PolicyConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.prequential import prequential_split
from components.models.artifacts import TrainedModel
from components.models.scoring import RecloopScorer
from components.policy.exploration import describe_policy, marginals
from components.policy.ope import Estimate, OpeResult, RewardModel, evaluate, position_weights

WEIGHTINGS = ("rate", "dcg")


@dataclass
class OpeComparison:
    """Champion (logged) and challenger (estimated) values per metric, e.g. click_rate, click_dcg."""

    champion: dict[str, Estimate]
    challenger: dict[str, OpeResult]
    policy: str
    requests: int
    skipped: int  # logged requests of users the split does not know
    report: Path | None = None

    def estimate(self, metric: str, estimator: str = "snips") -> tuple[float, float]:
        """(champion, challenger) values of `metric` (the gate reads this)."""
        return self.champion[metric].value, self.challenger[metric].estimates[estimator].value

    def to_dict(self) -> dict:
        return {"policy": self.policy, "requests": self.requests, "skipped": self.skipped,
                "champion": {m: dataclasses.asdict(e) for m, e in self.champion.items()},
                "challenger": {m: r.to_dict() for m, r in self.challenger.items()}}

    def describe(self) -> str:
        lines = [f"ope: challenger policy {self.policy} on {self.requests} logged lists ({self.skipped} skipped: "
                 "unknown users)"]
        for metric, result in self.challenger.items():
            champ = self.champion[metric]
            lines.append(f"  {metric}: champion (logged) {champ.value:.4f} [{champ.low:.4f}, {champ.high:.4f}]; "
                         "challenger " + ", ".join(f"{n} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]"
                                                   for n, e in result.estimates.items())
                         + f" (ESS {result.ess:.0f}, support {result.support:.2f})")
        if self.report is not None:
            lines.append(f"  wrote {self.report}")
        return "\n".join(lines)


def logged_lists(feedback: pd.DataFrame, reward_events: list[str]) -> pd.DataFrame:
    """One row per served slot: request_id, user_id, item_id, position (from 0), timestamp, propensity,
    and a 0/1 column per reward event (a client event naming the same request and item)."""
    shown = feedback[(feedback["source"] == "server") & (feedback["event"] == "impression")
                     & feedback["request_id"].notna() & feedback["rank"].notna()]
    if shown.empty:
        raise RecloopError("the feedback log holds no served impressions: serve some recommendations first")
    propensity = shown["propensity"] if "propensity" in shown else pd.Series(1.0, index=shown.index)
    out = pd.DataFrame({"request_id": shown["request_id"].astype(str), "user_id": shown["user_id"],
                        "item_id": shown["item_id"].astype(str), "position": shown["rank"].astype("int64") - 1,
                        "timestamp": shown["timestamp"].astype("int64"),
                        "propensity": propensity.fillna(1.0).astype(float)})
    out = out.drop_duplicates(["request_id", "position"]).reset_index(drop=True)
    client = feedback[(feedback["source"] == "client") & feedback["request_id"].notna()]
    for event in reward_events:
        hits = client.loc[client["event"] == event, ["request_id", "item_id"]].astype(str).drop_duplicates()
        key = pd.MultiIndex.from_frame(out[["request_id", "item_id"]])
        out[event] = key.isin(pd.MultiIndex.from_frame(hits)).astype(float) if len(hits) else 0.0
    return out


def has_propensities(feedback: pd.DataFrame) -> bool:
    """Whether the log holds served impressions with a logged propensity (a service that explored)."""
    shown = feedback[(feedback["source"] == "server") & (feedback["event"] == "impression")]
    return "propensity" in shown and bool(shown["propensity"].notna().any())


def rewarded_lists(feedback: pd.DataFrame, reward_events: list[str]) -> pd.DataFrame:
    """`logged_lists` with one `reward` column (1 when any of `reward_events` followed), for the policy
    objective (components/policy/reinforce.py)."""
    lists = logged_lists(feedback, reward_events)
    return lists.assign(reward=lists[list(reward_events)].max(axis=1))


def gate_estimates(cfg: PolicyConfig, feedback: pd.DataFrame, data: SplitData, champion: TrainedModel,
                   challenger: TrainedModel, extra_history: pd.DataFrame | None = None, candidates: int = 100,
                   seed: int = 0) -> dict:
    """What the gate compares: champion and challenger models, both under the policy `cfg.target`,
    estimated with SNIPS on the same logged lists (the first reward event, DCG-weighted), so the
    comparison is between models and not between the served policy and the target one; the logged
    value, intervals, ESS and support beside them."""
    metric = f"{cfg.reward_events[0]}_dcg"
    a = ope_compare(cfg, feedback, data, champion, extra_history, candidates, seed).challenger[metric]
    compared = ope_compare(cfg, feedback, data, challenger, extra_history, candidates, seed)
    b = compared.challenger[metric]
    return {"metric": metric, "estimator": "snips", "policy": compared.policy,
            "champion": a.estimates["snips"].value, "challenger": b.estimates["snips"].value,
            "champion_low": a.estimates["snips"].low, "champion_high": a.estimates["snips"].high,
            "challenger_low": b.estimates["snips"].low, "challenger_high": b.estimates["snips"].high,
            "logged": compared.champion[metric].value, "lists": compared.requests, "skipped": compared.skipped,
            "champion_ess": a.ess, "challenger_ess": b.ess, "challenger_support": b.support}


def ope_compare(cfg: PolicyConfig, feedback: pd.DataFrame, data: SplitData, challenger: TrainedModel,
                extra_history: pd.DataFrame | None = None, candidates: int = 100, seed: int = 0,
                report_dir: Path | None = None) -> OpeComparison:
    """Champion (logged) vs `challenger` with policy `cfg.target` on the lists of `feedback`
    (`read_feedback`'s frame, with an optional propensity column). `data`: the split whose catalog the
    challenger was trained on; `extra_history`: canonical interactions since (the log's client feedback)."""
    lists = logged_lists(feedback, cfg.reward_events)
    k = int(lists["position"].max()) + 1
    users = pd.Index(data.users["user_id"].astype(str))
    known = lists["user_id"].notna().to_numpy() & (users.get_indexer(lists["user_id"].astype(str)) >= 0)
    skipped = lists.loc[~known, "request_id"].nunique()
    lists = lists[known].reset_index(drop=True)
    if lists.empty:
        raise RecloopError("no logged list is of a user the split knows: nothing to evaluate")
    requests = lists.drop_duplicates("request_id").reset_index(drop=True)
    scores = _scores(data, challenger, requests, extra_history, users, seed)
    items = pd.Index(data.items["item_id"].astype(str))
    cold = data.items["cold"].to_numpy(bool)
    log = _target(cfg, lists, requests, scores, items, cold, candidates, k)
    champion, challenger_results = {}, {}
    for event in cfg.reward_events:
        for weighting in WEIGHTINGS:
            metric = f"{event}_{weighting}"
            frame = log.assign(reward=log[event])
            position, score = frame["position"].to_numpy(), frame["score"].to_numpy()
            model = RewardModel.fit(position, score, frame["reward"].to_numpy(), k)
            frame = frame.assign(predicted=model.predict(position, score), direct=_direct(frame, model))
            weights = position_weights(k, weighting)
            challenger_results[metric] = evaluate(frame, weights, metric, cfg.bootstrap, seed)
            champion[metric] = evaluate(frame.assign(target=frame["propensity"], predicted=0.0, direct=0.0),
                                        weights, metric, cfg.bootstrap, seed).estimates["snips"]
    result = OpeComparison(champion, challenger_results, describe_policy(cfg.target), len(requests), int(skipped))
    if report_dir is not None:
        result.report = _write(result, Path(report_dir))
    return result


def _scores(data: SplitData, trained: TrainedModel, requests: pd.DataFrame, extra: pd.DataFrame | None,
            users: pd.Index, seed: int) -> np.ndarray:
    """(requests, items) challenger scores from each user's history strictly before the request."""
    items = pd.Index(data.items["item_id"].astype(str))
    every = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    if extra is not None and len(extra):
        extra = extra.assign(user_idx=users.get_indexer(extra["user_id"].astype(str)),
                             item_idx=items.get_indexer(extra["item_id"].astype(str)))
        every = pd.concat([every, extra[(extra["user_idx"] >= 0) & (extra["item_idx"] >= 0)]], ignore_index=True)
    # The first logged item stands in as each request's target: prequential_split needs one, only its time counts.
    targets = pd.DataFrame({"user_id": requests["user_id"].astype(str), "item_id": requests["item_id"],
                            "timestamp": requests["timestamp"], "event": "impression", "value": 1.0,
                            "domain": "default", "user_idx": users.get_indexer(requests["user_id"].astype(str)),
                            "item_idx": np.maximum(items.get_indexer(requests["item_id"]), 0)})
    split = dataclasses.replace(data, train=every, valid=data.valid.iloc[:0], test=targets)
    pre = prequential_split(split, seed=seed)
    scorer = RecloopScorer(trained, "challenger").fit(data)
    scores = scorer.score(pre.data, np.arange(len(targets)), "test").numpy().astype(np.float64)
    seen = pre.data.train
    scores[seen["user_idx"].to_numpy(), seen["item_idx"].to_numpy()] = -np.inf
    return scores


def _target(cfg: PolicyConfig, lists: pd.DataFrame, requests: pd.DataFrame, scores: np.ndarray, items: pd.Index,
            cold: np.ndarray, candidates: int, k: int) -> pd.DataFrame:
    """`lists` with the challenger's probability of each logged item at its position (`target`), its
    score of the item (`score`), and per row the pool it ranked (for DR's direct term)."""
    row_of = pd.Series(np.arange(len(requests)), index=requests["request_id"])
    r = row_of.reindex(lists["request_id"]).to_numpy()
    idx = items.get_indexer(lists["item_id"])
    target, score = np.zeros(len(lists)), np.zeros(len(lists))
    pools: list[tuple[np.ndarray, np.ndarray]] = [None] * len(lists)  # type: ignore[list-item]
    for i, rows in pd.Series(np.arange(len(lists))).groupby(r).groups.items():
        rows = np.asarray(rows)
        s = scores[i]
        order = np.argsort(-s, kind="stable")
        top = order[:min(candidates, int(np.isfinite(s).sum()))]
        fresh = np.setdiff1d(np.flatnonzero(cold & np.isfinite(s)), top)
        table = marginals(cfg.target, s[top], k, str(requests["request_id"].iloc[i]), s[fresh])
        pool = np.concatenate([top, fresh])
        where = pd.Index(pool).get_indexer(idx[rows])
        pos = lists["position"].to_numpy()[rows]
        ok = (where >= 0) & (pos < table.shape[1])
        target[rows[ok]] = table[where[ok], pos[ok]]
        finite = np.where(np.isfinite(s), s, np.nan)
        score[rows] = np.where(idx[rows] >= 0, finite[np.maximum(idx[rows], 0)], np.nan)
        for j in rows:
            pools[j] = (s[pool], table)
    score = np.nan_to_num(score, nan=float(np.nanmin(score)) if np.isfinite(score).any() else 0.0)
    return lists.assign(target=target, score=score, pool=pools)


def _direct(frame: pd.DataFrame, model: RewardModel) -> np.ndarray:
    """The reward model's expected reward at each row's position under the challenger's policy."""
    out = np.zeros(len(frame))
    position = frame["position"].to_numpy()
    for rows in frame.groupby("request_id", sort=False).indices.values():
        pool_scores, table = frame["pool"].iloc[rows[0]]  # one pool per request
        k = table.shape[1]
        # (pool, k) predicted reward of each pool item at each position, weighed by the policy's table.
        q = model.predict(np.repeat(np.arange(k), len(pool_scores)), np.tile(pool_scores, k)).reshape(k, -1).T
        expected = (table * q).sum(0)
        inside = position[rows] < k
        out[rows[inside]] = expected[position[rows][inside]]
    return out


def _write(result: OpeComparison, folder: Path) -> Path:
    body = result.to_dict()
    md = ["# Off-policy evaluation", "", f"Challenger policy: {result.policy}; {result.requests} logged lists "
          f"({result.skipped} skipped).", "",
          "| metric | champion (logged) | challenger IPS | SNIPS | DR | ESS | support |", "|---|---|---|---|---|---|---|"]
    for metric, r in result.challenger.items():
        e = r.estimates
        md.append(f"| {metric} | {result.champion[metric].value:.4f} | {e['ips'].value:.4f} | {e['snips'].value:.4f} "
                  f"[{e['snips'].low:.4f}, {e['snips'].high:.4f}] | {e['dr'].value:.4f} | {r.ess:.0f} "
                  f"| {r.support:.2f} |")
    write_text(folder / "ope.json", json.dumps(body, indent=2) + "\n")
    write_text(folder / "ope.md", "\n".join(md) + "\n")
    return folder / "ope.json"
