"""Baselines: what each computes, checked against plain dense arithmetic, and how they behave on real data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.baselines import ContentKNN, ImplicitALS, ImplicitBPR, ItemKNN, MostPopular
from components.evaluation.evaluator import evaluate_ranking


def test_most_popular_scores_are_training_counts(movielens):
    scores = MostPopular().fit(movielens).score(movielens, np.array([0, 5]), "test")
    assert scores.shape == (2, movielens.n_items)
    np.testing.assert_array_equal(scores[1], movielens.item_popularity())


def test_itemknn_equals_dense_cosine_with_top_k_neighbours(movielens):
    k = 15
    # A small block size forces several similarity blocks.
    model = ItemKNN(neighbours=k, block_cells=movielens.n_items * 37).fit(movielens)
    x = movielens.seen_matrix(movielens.train).toarray().astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    sim = (x.T @ x) / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(sim, 0)
    got = model.similarity_.toarray()
    for i in range(0, movielens.n_items, 23):
        kept = np.flatnonzero(got[i])
        assert len(kept) == min(k, np.count_nonzero(sim[i]))
        np.testing.assert_allclose(got[i, kept], sim[i, kept], rtol=1e-5)
        # Whatever was dropped is no more similar than the weakest neighbour kept.
        assert np.delete(sim[i], kept).max() <= got[i, kept].min() + 1e-6
    users = np.arange(10)
    history = movielens.seen_matrix(movielens.history("test")).toarray()[users]
    np.testing.assert_allclose(model.score(movielens, users, "test"), history @ got, rtol=1e-5, atol=1e-6)


def test_als_folds_the_validation_interaction_into_the_test_user_vector(movielens):
    model = ImplicitALS(factors=16, iterations=5, seed=3).fit(movielens)
    users = np.arange(20)
    valid_scores = model.score(movielens, users, "valid")
    test_scores = model.score(movielens, users, "test")
    assert valid_scores.shape == test_scores.shape == (20, movielens.n_items)
    assert not np.allclose(valid_scores, test_scores)  # the extra history item moved every user
    # The fold-in is the exact least-squares user solution: refitting the same seed gives the same scores.
    again = ImplicitALS(factors=16, iterations=5, seed=3).fit(movielens)
    np.testing.assert_allclose(again.score(movielens, users, "test"), test_scores, rtol=1e-4, atol=1e-5)


def test_collaborative_baselines_beat_popularity_on_real_data(movielens):
    ndcg = {}
    for model in (MostPopular(), ItemKNN(neighbours=50), ImplicitALS(factors=32, iterations=10, seed=0),
                  ImplicitBPR(factors=32, iterations=30, seed=0)):
        ndcg[model.name] = evaluate_ranking(model.fit(movielens), movielens, "test", progress=False).metrics["ndcg@10"]
    assert ndcg["popular"] > 0.01
    assert ndcg["itemknn"] > ndcg["popular"] and ndcg["als"] > ndcg["popular"]
    assert ndcg["bpr"] > 0.01


def test_content_profile_is_the_mean_of_the_last_items(movielens, item_text):
    model = ContentKNN(item_text, history_items=3).fit(movielens)
    history = movielens.history("valid")
    user = 4
    last = history.loc[history["user_idx"] == user, "item_idx"].to_numpy()[-3:]
    profile = item_text[last].mean(0)
    expected = item_text @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(model.score(movielens, np.array([user]), "valid")[0], expected, atol=1e-5)


def test_content_ranks_a_sequel_first_for_a_one_film_history(movielens, item_text):
    """With real MiniLM vectors of titles and genres, Toy Story's nearest film is Toy Story 2."""
    items = movielens.items
    titles = items["title"].tolist()
    toy_story, sequel = titles.index("Toy Story (1995)"), titles.index("Toy Story 2 (1999)")

    def event(item: int, t: int) -> pd.DataFrame:
        return pd.DataFrame({"user_id": ["fan"], "item_id": [items["item_id"][item]], "timestamp": [t],
                             "event": ["rate"], "value": [5.0], "domain": ["movies"]})

    one_film = SplitData.from_frames(items, pd.DataFrame({"user_id": ["fan"]}), event(toy_story, 1),
                                     event(sequel, 2), event(0, 3))
    scores = ContentKNN(item_text, history_items=1).fit(one_film).score(one_film, np.array([0]), "valid")[0]
    scores[toy_story] = -np.inf
    assert int(np.argmax(scores)) == sequel


def test_content_refuses_vectors_for_another_catalog(movielens, item_text):
    with pytest.raises(RecloopError, match="featurize"):
        ContentKNN(item_text[:-1]).fit(movielens)
