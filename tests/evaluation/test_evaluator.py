"""The full-ranking evaluator: hand-computed cases, invariances, and a cross-check against ranx."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from components.data.dataset import SplitData
from components.evaluation.baselines import ImplicitALS, MostPopular
from components.evaluation.evaluator import evaluate_ranking


def _events(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "domain"]).assign(event="rate", value=1.0)


@pytest.fixture
def tiny() -> SplitData:
    """3 users, 5 items. u1's test target i1 is already in its history (re-consumption)."""
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(5)]})
    # i3 is held out by the split; i4 is not flagged but first appears after training.
    items["cold"] = [False, False, False, True, False]
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"]})
    train = _events([("u0", "i0", 1, "a"), ("u1", "i1", 1, "a"), ("u1", "i2", 2, "a"), ("u2", "i0", 1, "b")])
    valid = _events([("u0", "i4", 2, "a"), ("u1", "i3", 3, "a"), ("u2", "i1", 2, "b")])
    test = _events([("u0", "i2", 3, "a"), ("u1", "i1", 4, "a"), ("u2", "i4", 3, "b")])
    return SplitData.from_frames(items, users, train, valid, test)


TINY_SCORES = np.array([
    [0.9, 0.8, 0.7, 0.6, 0.95],  # u0: i0 and i4 are seen at test; i1 beats the target i2
    [0.1, 0.9, 0.8, 0.7, 0.6],   # u1: target i1 is seen, so it cannot be recommended
    [1.0, 1.0, 1.0, 1.0, 1.0],   # u2: all tied; i0, i1 seen; target i4 ties with i2, i3
], dtype=np.float32)


def test_hand_computed_case_with_seen_items_reconsumption_and_ties(tiny, fixed_scores):
    r = evaluate_ranking(fixed_scores(TINY_SCORES), tiny, "test", ks=(1, 2), progress=False)
    t = r.per_target.set_index("user_idx")
    # u0: rank 2 among i1, i2, i3.
    assert t.loc[0, "hr@1"] == 0 and t.loc[0, "hr@2"] == 1
    assert t.loc[0, "ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert t.loc[0, "mrr"] == pytest.approx(1 / 2)
    # u1: the target is in the history, filtered, a miss.
    assert bool(t.loc[1, "in_history"]) and t.loc[1, ["hr@2", "ndcg@2", "mrr"]].sum() == 0
    # u2: three candidates tied: expected values under a random order.
    assert t.loc[2, "hr@1"] == pytest.approx(1 / 3) and t.loc[2, "hr@2"] == pytest.approx(2 / 3)
    assert t.loc[2, "mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert t.loc[2, "ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)

    assert r.metrics["hr@2"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert r.metrics["mrr"] == pytest.approx((1 / 2 + 0 + (1 + 1 / 2 + 1 / 3) / 3) / 3)
    assert r.metrics["targets"] == 3 and r.metrics["targets_in_history"] == 1
    # Lists never hold seen items: u0 gets i1 then i2.
    assert r.topk_items[0].tolist() == [1, 2]
    assert set(r.topk_items[2]) <= {2, 3, 4}


def test_valid_stage_uses_train_as_history(tiny, fixed_scores):
    r = evaluate_ranking(fixed_scores(TINY_SCORES), tiny, "valid", ks=(1,), progress=False)
    t = r.per_target.set_index("user_idx")
    assert t.loc[0, "hr@1"] == 1  # i4 (0.95) is u0's best unseen item when only i0 is history
    assert r.metrics["targets_in_history"] == 0


def test_slices_and_popularity_buckets(tiny, fixed_scores):
    r = evaluate_ranking(fixed_scores(TINY_SCORES), tiny, "test", ks=(2,), cold_user_max_history=2,
                         head_share=0.2, progress=False)
    s = r.slices
    # Training counts i0: 2, i1: 1, i2: 1 -> i0 alone makes 20%: every target is a tail item.
    assert s["all"]["size"] == 3 and s["head_items"]["size"] == 0 and s["tail_items"]["size"] == 3
    # u2's target i4 has no training interaction: a cold item although the split did not flag it.
    assert s["cold_items"]["size"] == 1 and s["cold_items"]["hr@2"] == pytest.approx(2 / 3)
    assert s["cold_users"]["size"] == 2  # u0 and u2 have 2 history interactions, u1 has 3
    assert s["domain=a"]["size"] == 2 and s["domain=b"]["size"] == 1
    assert r.by_popularity["targets"].sum() == 3
    assert r.by_popularity.set_index("bucket").loc["0", "targets"] == 1  # i4 never seen in training


def test_constant_scores_give_a_random_rankings_numbers(movielens, fixed_scores):
    model = fixed_scores(np.zeros((movielens.n_users, movielens.n_items), np.float32), name="constant")
    r = evaluate_ranking(model, movielens, "test", ks=(10,), progress=False)
    seen = movielens.seen_matrix(movielens.history("test"))
    candidates = movielens.n_items - np.asarray(seen.sum(axis=1)).ravel()[r.per_target["user_idx"]]
    np.testing.assert_allclose(r.per_target["hr@10"], 10 / candidates)


def test_chunking_and_user_sampling_do_not_change_results(movielens):
    model = MostPopular().fit(movielens)
    whole = evaluate_ranking(model, movielens, "test", progress=False)
    chunked = evaluate_ranking(model, movielens, "test", chunk_size=7, progress=False)
    pd.testing.assert_frame_equal(whole.per_target, chunked.per_target)
    np.testing.assert_array_equal(whole.topk_items, chunked.topk_items)
    some = np.arange(0, movielens.n_users, 3)
    sample = evaluate_ranking(model, movielens, "test", users=some, progress=False)
    expected = whole.per_target[whole.per_target["user_idx"].isin(some)]
    assert sample.metrics["ndcg@10"] == pytest.approx(expected["ndcg@10"].mean())
    assert sample.slices["all"]["size"] == len(expected)


def test_topk_frame_is_a_long_table_without_seen_items(movielens):
    r = evaluate_ranking(MostPopular().fit(movielens), movielens, "valid", ks=(5,), progress=False)
    frame = r.topk_frame(movielens)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(frame) == 5 * len(r.topk_users) and frame["rank"].between(1, 5).all()
    seen = movielens.history("valid")[["user_id", "item_id"]]
    assert frame.merge(seen, on=["user_id", "item_id"]).empty


def test_a_model_returning_a_wrong_shape_or_nan_is_refused(tiny, fixed_scores):
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(fixed_scores(TINY_SCORES[:, :4]), tiny, "test", progress=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(fixed_scores(np.full_like(TINY_SCORES, np.nan)), tiny, "test", progress=False)


@pytest.mark.slow
def test_agrees_with_ranx_on_real_rankings(movielens):
    """NDCG@10/20, Recall@10/20 and MRR from ranx on the same rankings, for 300 real users."""
    from ranx import Qrels, Run, evaluate

    model = ImplicitALS(factors=32, iterations=10, seed=0).fit(movielens)
    result = evaluate_ranking(model, movielens, "test", ks=(10, 20), progress=False)
    assert (result.per_target["ties"] == 0).all()  # real-valued scores: ranx has no tie rule to disagree on

    # Rebuild each ranking independently: score, drop seen items, keep every item that scores at
    # least the target (the target's rank and MRR depend on nothing else) plus the top 20.
    targets = movielens.targets("test")
    scores = np.asarray(model.score(movielens, targets["user_idx"].to_numpy(), "test"), np.float64)
    history = movielens.history("test")
    scores[history["user_idx"].map(dict(zip(targets["user_idx"], range(len(targets)), strict=True))).to_numpy(),
           history["item_idx"].to_numpy()] = -np.inf
    qrels, run = {}, {}
    for row, (user, item) in enumerate(zip(targets["user_idx"], targets["item_idx"], strict=True)):
        s = scores[row]
        keep = np.union1d(np.flatnonzero(s >= s[item]), np.argsort(-s)[:20])
        keep = keep[np.isfinite(s[keep])]
        run[f"u{user}"] = {f"i{i}": float(s[i]) for i in keep}
        qrels[f"u{user}"] = {f"i{item}": 1}
    ranx = evaluate(Qrels(qrels), Run(run), ["ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr"])
    ours = result.metrics
    assert len(targets) >= 250
    assert ours["ndcg@10"] == pytest.approx(ranx["ndcg@10"], abs=1e-6)
    assert ours["ndcg@20"] == pytest.approx(ranx["ndcg@20"], abs=1e-6)
    assert ours["hr@10"] == pytest.approx(ranx["recall@10"], abs=1e-6)
    assert ours["hr@20"] == pytest.approx(ranx["recall@20"], abs=1e-6)
    assert ours["mrr"] == pytest.approx(ranx["mrr"], abs=1e-6)
    assert ours["hr@10"] > 0.05  # a real model on real data, not a degenerate agreement at zero


def test_torch_scores_are_evaluated_like_numpy_scores(tiny, fixed_scores):
    import torch

    class TorchScores(fixed_scores):
        def score(self, data, users, stage):
            return torch.from_numpy(self.matrix[users].astype(np.float64))

    as_numpy = evaluate_ranking(fixed_scores(TINY_SCORES), tiny, "test", ks=(1, 2), progress=False)
    as_torch = evaluate_ranking(TorchScores(TINY_SCORES), tiny, "test", ks=(1, 2), progress=False)
    pd.testing.assert_frame_equal(as_numpy.per_target, as_torch.per_target)
    np.testing.assert_array_equal(as_numpy.topk_items, as_torch.topk_items)
