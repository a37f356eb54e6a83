"""Exploration over the model's candidates, with each shown item's propensity.

A policy turns the candidates' scores into a list of k items. It is randomised by a generator seeded
from the request id, so a replayed request gets the same list. With the list comes each slot's
**propensity**: the marginal probability, under the policy, that this item is shown at this position
(not conditional on the slots above). Off-policy evaluation weighs a logged click by the ratio of two
such probabilities (components/policy/ope.py).

The lists (positions counted from 0, `m = k - r` main slots, `r` reserved fresh slots at the end):
- none: the top m candidates. Propensity 1.
- epsilon: each main slot independently keeps its top-m item with probability 1 - epsilon, or shows
  an item drawn uniformly, without repeats, from the candidates ranked m and below (Q of them).
  Exact: 1 - epsilon for the top-m item at its own slot, epsilon / Q for any lower candidate at any
  main slot, 0 otherwise.
- boltzmann: a Plackett-Luce draw of m candidates with weights exp(score / temperature) (Gumbel top-m).
  The probability of a slot given the slots above is exact, but the marginal of an item at a position
  sums over every prefix; it is estimated from `samples` draws of the prefix, averaging the exact
  conditional probability of the item given each drawn prefix (a Rao-Blackwellised Monte Carlo:
  exact at position 0, seeded by the request id; the shown list is one of the draws, so a shown
  item's propensity is never 0).
- fresh slots: the last r = round(fresh_share * k) slots show items drawn uniformly, without repeats,
  from the `fresh_pool` best-scored fresh items that are not candidates (P of them; r shrinks to P
  when fewer). Exact: 1 / P for each of them at each reserved slot.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from components.config import ExplorationConfig
from components.errors import RecloopError


@dataclass(frozen=True)
class Slate:
    """A served list: `items` index the pool (the candidates, then the fresh items) in slot order."""

    items: np.ndarray  # (k,) int
    propensity: np.ndarray  # (k,) marginal probability of items[j] at slot j


def request_seed(request_id: str) -> int:
    """A 64-bit seed from the request id: the same id always draws the same list."""
    return int.from_bytes(hashlib.blake2b(str(request_id).encode(), digest_size=8).digest(), "little")


def describe_policy(cfg: ExplorationConfig) -> str:
    """The policy and its parameters in one line (logged with each answer)."""
    base = {"none": "none", "epsilon": f"epsilon={cfg.epsilon:g}",
            "boltzmann": f"boltzmann(temperature={cfg.temperature:g})"}[cfg.kind]
    return base + (f"+fresh(share={cfg.fresh_share:g}, pool={cfg.fresh_pool})" if cfg.fresh_share else "")


@dataclass(frozen=True)
class _Layout:
    order: np.ndarray  # candidates by score, best first
    fresh: np.ndarray  # pool indices of the fresh items that may fill reserved slots
    main: int  # main slots
    reserved: int  # fresh slots (after the main ones)


def _layout(cfg: ExplorationConfig, scores: np.ndarray, k: int, fresh_scores: np.ndarray | None) -> _Layout:
    n = len(scores)
    fresh_scores = np.zeros(0) if fresh_scores is None else np.asarray(fresh_scores, np.float64)
    fresh = n + np.argsort(-fresh_scores, kind="stable")[:cfg.fresh_pool]
    reserved = min(round(cfg.fresh_share * k), len(fresh))
    main = min(k - reserved, n)
    if cfg.kind == "epsilon" and cfg.epsilon > 0 and n - main < main:
        raise RecloopError(f"epsilon exploration of {main} slots needs at least {2 * main} candidates, got {n}: "
                           "raise the candidate count or lower k")
    return _Layout(np.argsort(-np.asarray(scores, np.float64), kind="stable"), fresh, main, reserved)


def _weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(scores, np.float64) / temperature
    return np.exp(z - z.max())


def rank(cfg: ExplorationConfig, scores: np.ndarray, k: int, request_id: str,
         fresh_scores: np.ndarray | None = None) -> Slate:
    """The list shown for `request_id`: `scores` are the candidates' (any order), `fresh_scores` those of
    fresh items that are not candidates (pool indices from len(scores) on)."""
    items = draw(cfg, scores, k, request_id, fresh_scores)
    table = marginals(cfg, scores, k, request_id, fresh_scores)
    return Slate(items, table[items, np.arange(len(items))])


def draw(cfg: ExplorationConfig, scores: np.ndarray, k: int, request_id: str,
         fresh_scores: np.ndarray | None = None) -> np.ndarray:
    """`rank`'s list alone (pool indices in slot order), without its propensities."""
    lay = _layout(cfg, scores, k, fresh_scores)
    rng = np.random.default_rng(request_seed(request_id))
    m, top = lay.main, lay.order[:lay.main]
    if cfg.kind == "boltzmann":
        main = _boltzmann(cfg, scores, m, rng)
    elif cfg.kind == "epsilon":
        main = top.copy()
        swap = np.flatnonzero(rng.random(m) < cfg.epsilon)
        main[swap] = rng.permutation(lay.order[m:])[:len(swap)]
    else:
        main = top
    return np.concatenate([main, rng.permutation(lay.fresh)[:lay.reserved]]).astype(np.int64)


def marginals(cfg: ExplorationConfig, scores: np.ndarray, k: int, request_id: str,
              fresh_scores: np.ndarray | None = None) -> np.ndarray:
    """(pool, slots) probability of each pool item at each slot of `rank`'s list (columns sum to 1)."""
    lay = _layout(cfg, scores, k, fresh_scores)
    n, m = len(scores), lay.main
    pool = n + (0 if fresh_scores is None else len(fresh_scores))
    table = np.zeros((pool, m + lay.reserved))
    if cfg.kind == "boltzmann" and m:
        # The list `rank` shows is one of the draws: a shown item's propensity is never 0.
        shown = _boltzmann(cfg, scores, m, np.random.default_rng(request_seed(request_id)))
        rng = np.random.default_rng([request_seed(request_id), 1])
        table[:n, :m] = _plackett_luce(_weights(scores, cfg.temperature), shown, cfg.samples, rng)
    elif cfg.kind == "epsilon" and n > m:
        table[lay.order[:m], np.arange(m)] = 1 - cfg.epsilon
        table[lay.order[m:], :m] = cfg.epsilon / (n - m)
    else:
        table[lay.order[:m], np.arange(m)] = 1.0
    if lay.reserved:
        table[lay.fresh, m:] = 1 / len(lay.fresh)
    return table


def _boltzmann(cfg: ExplorationConfig, scores: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """A Plackett-Luce draw of m candidates (Gumbel top-m)."""
    keys = np.log(_weights(scores, cfg.temperature)) + rng.gumbel(size=len(scores))
    return np.argsort(-keys, kind="stable")[:m]


def _plackett_luce(w: np.ndarray, shown: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(n, m) marginal position probabilities of a Plackett-Luce ranking with weights `w`: the mean,
    over sampled prefixes (the `shown` list and `samples` more), of each item's exact probability at
    slot j given the prefix's first j items."""
    n, m = len(w), len(shown)
    keys = np.log(w)[None, :] + rng.gumbel(size=(samples, n))
    prefix = np.argpartition(-keys, m - 1, axis=1)[:, :m] if m < n else np.arange(n)[None].repeat(samples, 0)
    prefix = np.take_along_axis(prefix, np.argsort(-np.take_along_axis(keys, prefix, 1), axis=1), 1)  # (S, m)
    prefix = np.vstack([shown[None, :], prefix])
    rows = np.arange(len(prefix))
    table = np.zeros((n, m))
    left = np.repeat(w[None, :], len(prefix), 0)  # (S + 1, n) weight of the items not yet drawn
    for j in range(m):
        # Given the first j items, item i comes next with probability w_i / (the weight left).
        table[:, j] = (left / left.sum(1, keepdims=True)).mean(0)
        left[rows, prefix[:, j]] = 0.0
    return table
