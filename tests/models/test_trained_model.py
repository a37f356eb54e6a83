"""A trained tiny model: beats most-popular, survives save/load, places a cold item by its text."""
from __future__ import annotations

import numpy as np
import torch
from recloop_data import TOY_STORY_2, TOY_STORY_3

from components.evaluation.baselines import MostPopular
from components.evaluation.evaluator import evaluate_ranking
from components.evaluation.protocol import Recommender
from components.models.artifacts import ITEM_VECTORS_FILE, load_trained, save_trained
from components.models.scoring import RecloopScorer, load_finetuned_scorer
from components.models.sequences import history_sequences


def test_learns_and_beats_most_popular(movielens, trained):
    pretrain = [h["train_loss"] for h in trained["pretrain"].history]
    assert pretrain[-1] < pretrain[0] - 0.3
    scorer = RecloopScorer(trained["model"]).fit(movielens)
    assert isinstance(scorer, Recommender)
    ours = evaluate_ranking(scorer, movielens, "test", (10,), progress=False).metrics["ndcg@10"]
    popular = evaluate_ranking(MostPopular().fit(movielens), movielens, "test", (10,), progress=False)
    assert ours > 1.5 * popular.metrics["ndcg@10"]


def test_save_then_load_scores_identically(movielens, trained, tmp_path):
    save_trained(trained["model"], tmp_path / "finetuned", {"note": "test"})
    users = np.arange(0, movielens.n_users, 7)
    before = RecloopScorer(trained["model"]).fit(movielens).score(movielens, users, "test")
    after = load_finetuned_scorer(tmp_path).fit(movielens).score(movielens, users, "test")
    assert torch.equal(before, after)
    vectors = np.load(tmp_path / "finetuned" / ITEM_VECTORS_FILE)
    assert vectors.shape == (movielens.n_items, trained["model"].model.config.dim)
    assert load_trained(tmp_path / "finetuned").item_ids == movielens.items["item_id"].tolist()


def test_a_users_scores_do_not_depend_on_who_is_scored_with_them(movielens, trained):
    # The scorer encodes histories in batches of similar length: a user's scores must be the ones
    # their history alone gives, whatever the lengths of the others in the call.
    scorer = RecloopScorer(trained["model"]).fit(movielens)
    users = np.random.default_rng(0).permutation(movielens.n_users)[:300]
    max_len = trained["model"].model.config.max_len
    lengths = history_sequences(movielens, trained["model"].vocab, "test", max_len).lengths[users]
    assert lengths.min() < 10 and lengths.max() == max_len
    together = scorer.score(movielens, users, "test")
    alone = torch.cat([scorer.score(movielens, users[i:i + 1], "test") for i in range(0, 300, 23)])
    torch.testing.assert_close(together[::23], alone, rtol=1e-5, atol=1e-5)


def test_cold_item_lands_near_items_with_similar_text(movielens, trained):
    model = trained["model"].model.eval()
    ids = movielens.items["item_id"].tolist()
    cold = ids.index(TOY_STORY_3)
    assert movielens.item_popularity()[cold] == 0  # nobody in the slice rated it
    with torch.no_grad():
        items = torch.arange(movielens.n_items)
        # The item tower with every ID dropped: text and genres alone.
        vectors = model.tower.text_vectors(items) + model.tower.attribute_vectors(items)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    similarity = unit @ unit[cold]
    similarity[cold] = -1.0
    ranked = [ids[i] for i in similarity.argsort(descending=True).tolist()]
    # The sequel stays in the top 5% (a random item ranks about 150 of 300): ranks 3-14 over seeds 0-11.
    # Training pulls text toward collaborative structure (era, audience), and how far the 1995 original
    # drifts depends on the seed (ranks 28-141 over the same seeds), so it is not asserted.
    assert ranked.index(TOY_STORY_2) < 15
