"""Metric functions against values computed by hand (and, for point-wise metrics, scikit-learn)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from components.evaluation import metrics as M


def test_ranking_metrics_without_ties():
    # 0-based positions 0, 1, 9, 10 (ranks 1, 2, 10, 11).
    greater, ties = np.array([0, 1, 9, 10]), np.zeros(4, int)
    np.testing.assert_allclose(M.hit_rate(greater, ties, 10), [1, 1, 1, 0])
    np.testing.assert_allclose(M.hit_rate(greater, ties, 1), [1, 0, 0, 0])
    np.testing.assert_allclose(M.ndcg(greater, ties, 10), [1, 1 / math.log2(3), 1 / math.log2(11), 0])
    np.testing.assert_allclose(M.reciprocal_rank(greater, ties), [1, 1 / 2, 1 / 10, 1 / 11])
    np.testing.assert_allclose(M.reciprocal_rank(greater, ties, 10), [1, 1 / 2, 1 / 10, 0])


def test_ties_count_at_their_expected_value_under_a_random_order():
    # The target ties with 3 others right behind one better item: positions 1..4 equally likely.
    greater, ties = np.array([1]), np.array([3])
    assert M.hit_rate(greater, ties, 1)[0] == 0
    assert M.hit_rate(greater, ties, 2)[0] == pytest.approx(1 / 4)
    assert M.hit_rate(greater, ties, 3)[0] == pytest.approx(2 / 4)
    assert M.hit_rate(greater, ties, 10)[0] == pytest.approx(1)
    assert M.ndcg(greater, ties, 3)[0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 4)
    expected_rr = (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4
    assert M.reciprocal_rank(greater, ties)[0] == pytest.approx(expected_rr)
    assert M.reciprocal_rank(greater, ties, 3)[0] == pytest.approx((1 / 2 + 1 / 3) / 4)


def test_all_tied_equals_a_random_ranking():
    n = 50
    greater, ties = np.array([0]), np.array([n - 1])
    for k in (1, 5, 10, 50):
        assert M.hit_rate(greater, ties, k)[0] == pytest.approx(k / n)
    assert M.reciprocal_rank(greater, ties)[0] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)


def test_head_items_make_the_given_share_of_interactions():
    popularity = np.array([1, 10, 3, 5, 1, 0])  # 20 interactions
    assert M.head_items(popularity, 0.2).tolist() == [False, True, False, False, False, False]
    # 10 < 12 <= 10 + 5: the item that crosses the line joins the head.
    assert M.head_items(popularity, 0.6).tolist() == [False, True, False, True, False, False]
    # Never-seen items are never head items, even when the share asks for everything.
    assert not M.head_items(popularity, 0.999)[5]


def test_beyond_accuracy_on_two_small_lists():
    topk = np.array([[0, 1], [1, 2]])
    head = np.array([True, False, False, False])
    popularity = np.array([8, 2, 0, 0])
    assert M.catalog_coverage(topk, 4) == pytest.approx(3 / 4)
    assert M.long_tail_share(topk, head) == pytest.approx(3 / 4)
    assert M.average_popularity(topk, popularity) == pytest.approx((8 + 2 + 2 + 0) / 4)
    share = np.array([0.5, 0.25, 0.125, 0.125])
    assert M.novelty(topk, share) == pytest.approx((1 + 2 + 2 + 3) / 4)
    # -1 marks an empty slot (fewer candidates than K) and is ignored.
    assert M.catalog_coverage(np.array([[0, -1]]), 4) == pytest.approx(1 / 4)


def test_user_share_is_smoothed():
    import scipy.sparse as sp

    seen = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(M.user_share(seen), [(3 + 1) / 4, 1 / 4, (1 + 1) / 4])


def test_intra_list_diversity_matches_brute_force():
    e = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    # Unit vectors e1, e2, (e1+e2)/sqrt2: cosines 0, 1/sqrt2, 1/sqrt2.
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), e) == pytest.approx(1 - math.sqrt(2) / 3, abs=1e-6)
    rng = np.random.default_rng(0)
    e = rng.normal(size=(30, 8)).astype(np.float32)
    topk = rng.choice(30, size=(5, 6), replace=True)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    brute = []
    for row in topk:
        sims = unit[row] @ unit[row].T
        brute.append(1 - sims[np.triu_indices(len(row), 1)].mean())
    assert M.intra_list_diversity(topk, e, chunk=2) == pytest.approx(np.mean(brute), abs=1e-5)


def test_intra_list_diversity_leaves_out_items_without_text():
    e = np.array([[1, 0], [0, 1], [0, 0]], dtype=np.float32)
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), e) == pytest.approx(1.0)
    assert M.intra_list_diversity(np.array([[0, 2, -1]]), e) == 0.0  # no pair left


def test_pointwise_metrics():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes ties
    assert M.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    p = rng.random(200)
    assert M.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), abs=1e-9)
    assert M.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3))
    assert M.mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.auc([1, 1], [0.2, 0.4])
