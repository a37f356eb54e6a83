"""The ANN index for big catalogs against exact scoring: recall@100 at the calibrated nprobe, exact scores,
best first, the norm augmentation that turns inner product into L2, and the exact fallbacks (filters
that leave too few of the found items; vectors on which no nprobe reaches the target)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from components.serving.ann import AnnIndex, augment

K = 100


@pytest.fixture(scope="module")
def catalog():
    """20,000 items in 256 clusters (as embeddings cluster), queries from the same mixture; seeded."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, 32), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        return centres[rng.integers(0, 256, n)] + 0.5 * rng.standard_normal((n, 32), dtype=np.float32)

    items, calibration, queries = draw(20_000), draw(300), draw(200)
    return items, AnnIndex.build(items, calibration, min_recall=0.98, k=K), queries


def exact(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return torch.topk(torch.from_numpy(queries @ items.T), k, dim=1).indices.numpy()


def test_recall_at_100_on_new_queries_reaches_the_target(catalog):
    items, index, queries = catalog
    assert index.recall >= 0.98 and index.k == K
    rows, _ = index.search(queries, K)
    truth = exact(items, queries, K)
    recall = np.mean([len(np.intersect1d(r, t)) / K for r, t in zip(rows, truth)])
    assert recall >= 0.97  # calibrated on other queries: a little slack


def test_found_items_carry_their_exact_scores_best_first(catalog):
    items, index, queries = catalog
    rows, scores = index.search(queries[0], 10)
    assert rows.shape == scores.shape == (10,)
    np.testing.assert_allclose(scores, items[rows] @ queries[0], rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(scores) <= 1e-6)


def test_dense_scores_pick_the_same_top_k_as_exact_when_filters_allow(catalog):
    items, index, queries = catalog
    allowed = np.ones(len(items), bool)
    dense = index.scores(queries[1], allowed, 10)
    full = items @ queries[1]
    assert np.isinf(dense).sum() >= len(items) - K  # only the found items are scored
    top = np.argsort(-dense)[:10]
    assert len(np.intersect1d(top, np.argsort(-full)[:10])) >= 9
    np.testing.assert_allclose(dense[top], full[top], rtol=1e-5, atol=1e-4)


def test_strict_filters_fall_back_to_exact_scores(catalog):
    items, index, queries = catalog
    allowed = np.zeros(len(items), bool)
    allowed[::997] = True  # 21 items, almost none among the index's candidates
    dense = index.scores(queries[2], allowed, 10)
    np.testing.assert_allclose(dense, items @ queries[2], rtol=1e-5, atol=1e-4)


def test_augmented_vectors_rank_by_l2_as_the_originals_by_inner_product():
    rng = np.random.default_rng(2)
    items = rng.standard_normal((500, 8), dtype=np.float32) * rng.uniform(0.1, 3.0, (500, 1)).astype(np.float32)
    max_norm = float(np.linalg.norm(items, axis=1).max())
    data = augment(items, max_norm)
    np.testing.assert_allclose(np.linalg.norm(data, axis=1), max_norm, rtol=1e-4)
    query = rng.standard_normal(8).astype(np.float32)
    by_l2 = np.argsort(np.linalg.norm(data - np.append(query, 0.0), axis=1))[:20]
    assert by_l2.tolist() == np.argsort(-(items @ query))[:20].tolist()


def test_isotropic_random_vectors_keep_exact_scoring():
    """No structure to find: no nprobe up to the scan limit reaches 0.98, so the catalog is scored exactly."""
    rng = np.random.default_rng(3)
    items = rng.standard_normal((20_000, 64), dtype=np.float32)
    queries = rng.standard_normal((100, 64), dtype=np.float32)
    index = AnnIndex.build(items, queries, k=K)
    assert index.recall < 0.98 and index.nprobe == index.index.nlist // 4  # tried up to the limit
    assert AnnIndex.for_catalog(items, queries, above=1) is None


def test_a_catalog_smaller_than_k():
    items = np.random.default_rng(1).standard_normal((30, 8), dtype=np.float32)
    index = AnnIndex.build(items, k=K)
    rows, scores = index.search(items[0], K)
    assert sorted(rows.tolist()) == list(range(30)) and np.isfinite(scores).all()


def test_the_recommender_retrieves_through_the_index_above_the_threshold(bundle):
    """On the tiny trained model with serve.ann_above below its catalog: the same answers as exact scoring."""
    from components.serving.recommender import BundleRecommender
    from components.serving.schemas import RecommendRequest

    exact = BundleRecommender(bundle, version="exact").prepare(load_encoder=False)
    ann = BundleRecommender(bundle, version="ann", ann_above=1).prepare(load_encoder=False)
    assert exact.ann is None and ann.ann is not None and ann.ann.recall >= 0.98
    overlap = [len(np.intersect1d(a, e)) / len(e) for a, e in zip(ann.cand_items, exact.cand_items)]
    assert np.mean(overlap) >= 0.98
    for request in (RecommendRequest(user_id="1", k=10), RecommendRequest(history=["1", "260", "356"], k=10)):
        assert [i.item_id for i in ann.recommend(request).items] == [i.item_id for i in exact.recommend(request).items]


def test_catalogs_up_to_the_threshold_keep_exact_scoring(catalog):
    items, _, queries = catalog
    assert AnnIndex.for_catalog(items, queries, above=None) is None
    assert AnnIndex.for_catalog(items, queries, above=len(items)) is None
    assert AnnIndex.for_catalog(items, queries, above=len(items) - 1).recall >= 0.98
