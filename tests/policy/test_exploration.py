"""Exploration policies: the same request id gives the same list, and propensities are probabilities."""
import itertools

import numpy as np
import pytest

from components.config import ExplorationConfig
from components.errors import RecloopError
from components.policy.exploration import marginals, rank

SCORES = np.random.default_rng(0).normal(size=30)
FRESH = np.random.default_rng(1).normal(size=8)
POLICIES = [ExplorationConfig(kind="none"), ExplorationConfig(kind="epsilon", epsilon=0.3),
            ExplorationConfig(kind="boltzmann", temperature=0.5, samples=400),
            ExplorationConfig(kind="epsilon", epsilon=0.2, fresh_share=0.3, fresh_pool=5),
            ExplorationConfig(kind="boltzmann", fresh_share=0.2, samples=200)]


@pytest.mark.parametrize("cfg", POLICIES, ids=lambda c: f"{c.kind}-{c.fresh_share}")
def test_a_replayed_request_id_gets_the_same_list_and_propensities(cfg):
    first, again = rank(cfg, SCORES, 10, "req-7", FRESH), rank(cfg, SCORES, 10, "req-7", FRESH)
    assert np.array_equal(first.items, again.items) and np.array_equal(first.propensity, again.propensity)
    assert len(set(first.items.tolist())) == 10  # no item twice
    if cfg.kind != "none":
        lists = {tuple(rank(cfg, SCORES, 10, f"req-{i}", FRESH).items) for i in range(20)}
        assert len(lists) > 1  # other ids explore differently


@pytest.mark.parametrize("cfg", POLICIES, ids=lambda c: f"{c.kind}-{c.fresh_share}")
def test_each_slot_is_a_distribution_and_each_item_is_shown_at_most_once(cfg):
    table = marginals(cfg, SCORES, 10, "req-1", FRESH)
    assert table.shape == (38, 10)
    np.testing.assert_allclose(table.sum(0), 1.0)
    # Boltzmann's marginals beyond the first slot are Monte Carlo estimates: within their noise.
    assert (table.sum(1) <= 1 + (0.01 if cfg.kind == "boltzmann" else 1e-9)).all()
    slate = rank(cfg, SCORES, 10, "req-1", FRESH)
    assert (slate.propensity > 0).all()
    np.testing.assert_allclose(slate.propensity, table[slate.items, np.arange(10)])


def test_epsilon_greedy_propensities_are_the_closed_form():
    cfg = ExplorationConfig(kind="epsilon", epsilon=0.25)
    table = marginals(cfg, SCORES, 5, "r")
    order = np.argsort(-SCORES)
    np.testing.assert_allclose(table[order[:5], np.arange(5)], 0.75)
    np.testing.assert_allclose(table[order[5:]], 0.25 / 25)
    # The empirical frequencies over many request ids agree.
    counts = np.zeros_like(table)
    for i in range(4000):
        s = rank(cfg, SCORES, 5, f"q{i}")
        counts[s.items, np.arange(5)] += 1
    assert np.abs(counts / 4000 - table).max() < 0.03


def test_boltzmann_propensities_match_the_exact_plackett_luce_marginals():
    scores = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
    w = np.exp(scores)
    exact = np.zeros((5, 2))
    for a, b in itertools.permutations(range(5), 2):  # every ordered pair of the top 2 slots
        p = w[a] / w.sum() * w[b] / (w.sum() - w[a])
        exact[a, 0] += p
        exact[b, 1] += p
    table = marginals(ExplorationConfig(kind="boltzmann", temperature=1.0, samples=20000), scores, 2, "x")
    np.testing.assert_allclose(table[:, 0], exact[:, 0], rtol=1e-12)  # the first slot is exact
    np.testing.assert_allclose(table[:, 1], exact[:, 1], atol=0.01)


def test_fresh_slots_draw_uniformly_from_the_best_fresh_items():
    cfg = ExplorationConfig(kind="none", fresh_share=0.2, fresh_pool=4)
    slate = rank(cfg, SCORES, 10, "f", FRESH)
    best_fresh = set((30 + np.argsort(-FRESH)[:4]).tolist())
    assert set(slate.items[8:].tolist()) <= best_fresh
    np.testing.assert_allclose(slate.propensity, [1.0] * 8 + [0.25] * 2)
    # Without fresh items every slot is the model's.
    assert rank(cfg, SCORES, 10, "f").items.tolist() == np.argsort(-SCORES)[:10].tolist()


def test_too_few_candidates_for_epsilon_is_a_clear_error():
    with pytest.raises(RecloopError, match="needs at least 20 candidates"):
        rank(ExplorationConfig(kind="epsilon"), SCORES[:15], 10, "r")
