"""Off-policy evaluation of a ranking policy from logged lists: IPS, self-normalised IPS and doubly robust.

The value of a policy is the expected reward of one served list, sum over slots j of w_j * r_j
(w: position weights, `position_weights`; r: the slot's reward, e.g. a click). The estimators assume
the item-position click model: a slot's reward depends on the item and its position only, not on the
rest of the list. Then each logged slot is reweighted by rho = target(a, j) / logging(a, j), the
two policies' marginal probabilities of that item at that position (components/policy/exploration.py
logs the latter as the propensity), and
  IPS   = mean over lists of sum_j w_j rho r                            (unbiased, high variance)
  SNIPS = sum_j w_j (sum over lists of rho r) / (sum over lists of rho)  (per position; biased, stable)
  DR    = mean over lists of sum_j w_j (direct_j + rho (r - predicted)) (a reward model's guess, corrected)
where `direct_j` is the reward model's expected slot-j reward under the target and `predicted` its
prediction for the logged item. Without support (the logging policy never shows an item where the
target does) every estimator is biased low; `support` (the mean of rho per position, 1 when the
logging policy covers the target) shows it. Intervals: a percentile bootstrap over lists.
Single-action libraries (contextualbandits, vowpalwabbit's estimators) weigh one action per
context, not a list's positions, so these are written here (docs/policy.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from components.errors import RecloopError

ESTIMATORS = ("ips", "snips", "dr")
LOG_COLUMNS = ("request_id", "position", "propensity", "target", "reward")


@dataclass
class Estimate:
    value: float
    low: float  # 95% percentile bootstrap interval
    high: float
    se: float  # bootstrap standard error


@dataclass
class OpeResult:
    """One metric's estimates of a target policy from a log."""

    metric: str
    estimates: dict[str, Estimate]
    logged: float  # the logging policy's empirical value on the same lists
    requests: int
    ess: float  # Kish effective sample size of the slot weights
    support: float  # mean weight per position: below 1 where the target leaves the logging policy's support

    def to_dict(self) -> dict:
        return {**asdict(self), "estimates": {k: asdict(v) for k, v in self.estimates.items()}}

    def describe(self) -> str:
        parts = ", ".join(f"{name} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]" for name, e in self.estimates.items())
        return (f"{self.metric}: logged {self.logged:.4f}; {parts} ({self.requests} lists, "
                f"ESS {self.ess:.0f}, support {self.support:.2f})")


def position_weights(k: int, kind: str) -> np.ndarray:
    """rate: 1/k per slot (the share of shown items rewarded); dcg: 1/log2(position + 2)."""
    if kind == "rate":
        return np.full(k, 1.0 / k)
    if kind == "dcg":
        return 1.0 / np.log2(np.arange(k) + 2)
    raise RecloopError(f"unknown position weighting {kind!r}: use rate or dcg")


def _grid(log: pd.DataFrame, k: int) -> tuple[pd.Index, dict[str, np.ndarray]]:
    """The log's columns as (lists, k) arrays; a slot missing from a list counts nothing."""
    missing = [c for c in LOG_COLUMNS if c not in log]
    if missing:
        raise RecloopError(f"the log misses the columns {missing} (see components/policy/ope.py)")
    if (log["propensity"] <= 0).any():
        raise RecloopError("a logged propensity is not positive: the log was not written by the serving policy")
    requests, row = np.unique(log["request_id"].astype(str).to_numpy(), return_inverse=True)
    col = log["position"].to_numpy(np.int64)
    if col.min(initial=0) < 0 or col.max(initial=0) >= k:
        raise RecloopError(f"logged positions must lie in 0..{k - 1}")
    grids = {}
    for name in ("reward", "propensity", "target", "predicted", "direct"):
        grid = np.zeros((len(requests), k))
        if name in log:
            grid[row, col] = log[name].to_numpy(np.float64)
        grids[name] = grid
    grids["shown"] = np.zeros((len(requests), k))
    grids["shown"][row, col] = 1.0
    return pd.Index(requests), grids


def evaluate(log: pd.DataFrame, weights: np.ndarray, metric: str = "value", reps: int = 1000,
             seed: int = 0) -> OpeResult:
    """IPS, SNIPS and DR estimates of the target's value from `log`, one row per shown slot with
    request_id, position (from 0), propensity (logging), target (the target policy's probability of
    that item there) and reward; DR also reads `predicted` and `direct` (absent: 0, DR equals IPS)."""
    k = len(weights)
    _, g = _grid(log, k)
    n = len(g["reward"])
    if n == 0:
        raise RecloopError("the log holds no served lists to evaluate")
    rho = np.divide(g["target"], g["propensity"], out=np.zeros_like(g["target"]), where=g["shown"] > 0)
    ips = (rho * g["reward"]) @ weights  # (lists,)
    dr = (g["direct"] + rho * (g["reward"] - g["predicted"])) @ weights
    num, den = rho * g["reward"], rho  # (lists, k)

    def values(counts: np.ndarray) -> dict[str, np.ndarray]:  # counts: (B, lists) resampling multiplicities
        snips = np.divide(counts @ num, counts @ den, out=np.zeros((len(counts), k)), where=(counts @ den) > 0)
        return {"ips": counts @ ips / n, "snips": snips @ weights, "dr": counts @ dr / n}

    point = {name: float(v[0]) for name, v in values(np.ones((1, n))).items()}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATORS}
    for start in range(0, reps, 100):  # chunks keep the (B, lists) matrix small
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(100, reps - start)).astype(np.float64)
        for name, v in values(counts).items():
            draws[name].append(v)
    estimates = {}
    for name in ESTIMATORS:
        boot = np.concatenate(draws[name])
        low, high = np.percentile(boot, [2.5, 97.5])
        estimates[name] = Estimate(point[name], float(low), float(high), float(boot.std(ddof=1)))
    shown = g["shown"] > 0
    ess = float(rho[shown].sum() ** 2 / max((rho[shown] ** 2).sum(), 1e-300))
    per_position = den.sum(0) / np.maximum(g["shown"].sum(0), 1)
    used = g["shown"].sum(0) > 0
    return OpeResult(metric, estimates, float((g["reward"] @ weights).mean()), n, ess,
                     float(per_position[used].mean()) if used.any() else 0.0)


@dataclass
class RewardModel:
    """A logistic model of a slot's reward from its position and the item's score (for DR)."""

    coef: np.ndarray  # (k + 1,): one intercept per position, then the score's slope

    @classmethod
    def fit(cls, position: np.ndarray, score: np.ndarray, reward: np.ndarray, k: int,
            l2: float = 1.0, steps: int = 25) -> RewardModel:
        """Newton's method on the L2-penalised log-likelihood (rewards clipped to [0, 1])."""
        x = _features(position, score, k)
        y = np.clip(np.asarray(reward, np.float64), 0, 1)
        coef = np.zeros(x.shape[1])
        for _ in range(steps):
            p = 1 / (1 + np.exp(-(x @ coef)))
            grad = x.T @ (p - y) + l2 * coef
            hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(coef))
            coef -= np.linalg.solve(hess, grad)
        return cls(coef)

    def predict(self, position: np.ndarray, score: np.ndarray) -> np.ndarray:
        k = len(self.coef) - 1
        return 1 / (1 + np.exp(-(_features(position, score, k) @ self.coef)))


def _features(position: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    x = np.zeros((len(position), k + 1))
    x[np.arange(len(position)), np.asarray(position, np.int64)] = 1.0
    x[:, k] = score
    return x
