"""A zero-shot model's content prior in the service: the served blend is the library's, and a model without a
prior is scored as before.

The serving tests' tiny MovieLens model lends its transferable part as a foundation; adopting it zero-shot
(cosine, no ID rows) with a whitened content prior at a fixed weight gives a model with a prior in
seconds. What is checked is the scoring, not its quality: every served score of a user equals the
benchmark's `BlendScorer` (the model's scorer and `ContentKNN`) on the same history.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from components.data.dataset import SplitData
from components.evaluation.baselines import ContentKNN
from components.models.artifacts import load_trained, save_trained
from components.models.foundation import adopt, foundation_of
from components.models.scoring import RecloopScorer
from components.serving.bundle import load_bundle, write_bundle
from components.serving.recommender import BundleRecommender
from components.serving.schemas import HistoryEvent, RecommendRequest
from components.training.stage import load_inputs
from components.training.zero_shot import BlendScorer, zero_shot_prior

WEIGHT, HISTORY_ITEMS = 0.4, 3
CANDIDATES = 5  # a request for more goes through the full-catalog ranking path


@pytest.fixture(scope="module")
def prior_bundle(tiny_dirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prior")
    data, text = load_inputs(tiny_dirs["split"], tiny_dirs["features"])
    foundation = foundation_of(load_trained(tiny_dirs["finetuned"]), [{"domain": "movies"}])
    zero = adopt(foundation, data, text, ids=False, cosine=True)
    zero.prior, info = zero_shot_prior(foundation, text, [], normalisation="whiten", history_items=HISTORY_ITEMS,
                                       cosine=True, weight=WEIGHT)
    save_trained(zero, folder / "model", {"mode": "zero-shot", "scoring": "cosine", "content_prior": info})
    write_bundle(folder / "model", tiny_dirs["split"], tiny_dirs["features"], folder / "bundle")
    return load_bundle(folder / "bundle")


def library_scores(bundle, trained, prior) -> tuple[SplitData, torch.Tensor]:
    """Every user's BlendScorer scores after their whole stored history (the 'valid' stage of a split whose
    train part is every interaction the bundle holds), as the benchmark scores; or the model's alone."""
    histories = bundle.histories
    data = SplitData.from_frames(bundle.items, bundle.users, histories, histories.iloc[:0], histories.iloc[:0])
    model = RecloopScorer(trained)
    scorer = model if prior is None else BlendScorer(model, ContentKNN(prior.text, prior.history_items), prior.weight)
    users = np.arange(data.n_users)
    return data, torch.as_tensor(scorer.fit(data).score(data, users, "valid"))


def best_unseen(data: SplitData, scores: torch.Tensor, user: str, k: int) -> tuple[list[str], np.ndarray]:
    row = int(np.flatnonzero(data.users["user_id"].astype(str).to_numpy() == user)[0])
    seen = data.train.loc[data.train["user_idx"] == row, "item_idx"].to_numpy()
    masked = scores[row].clone()
    masked[seen] = -np.inf
    top = torch.topk(masked, k)
    return data.items["item_id"].astype(str).to_numpy()[top.indices.numpy()].tolist(), top.values.numpy()


def answer(recommender: BundleRecommender, request: RecommendRequest) -> tuple[list[str], np.ndarray]:
    got = recommender.recommend(request)
    return [i.item_id for i in got.items], np.array([i.score for i in got.items])


def test_the_prior_is_saved_with_the_model_and_the_scorer_blends_as_the_benchmark_does(prior_bundle):
    prior = prior_bundle.trained.prior
    assert prior is not None and (prior.weight, prior.history_items, prior.normalisation) == (
        WEIGHT, HISTORY_ITEMS, "whiten")
    assert prior_bundle.meta["metrics"]["content_prior"]["weight"] == WEIGHT  # what bundle.json (and /info) show
    plain = load_trained(prior_bundle.path / "model")
    plain.prior = None
    _, benchmark = library_scores(prior_bundle, plain, prior)
    _, evaluated = library_scores(prior_bundle, prior_bundle.trained, None)  # RecloopScorer reads the model's prior
    torch.testing.assert_close(evaluated, benchmark, rtol=0, atol=1e-5)


def test_the_served_blend_equals_the_library_blend(prior_bundle):
    recommender = BundleRecommender(prior_bundle, "zero", candidates=CANDIDATES).prepare(load_encoder=False)
    assert recommender.prior is prior_bundle.trained.prior and recommender.scoring == "cosine+content"
    plain = load_trained(prior_bundle.path / "model")
    plain.prior = None
    data, expected = library_scores(prior_bundle, plain, prior_bundle.trained.prior)
    user = "1"
    for k in (CANDIDATES, 20):  # the precomputed candidates, then the whole catalog ranked per request
        items, scores = answer(recommender, RecommendRequest(user_id=user, k=k))
        want_items, want_scores = best_unseen(data, expected, user, k)
        assert items == want_items
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    # The same events sent as an ad-hoc history: the request path blends them the same way.
    stored = prior_bundle.histories[prior_bundle.histories["user_id"] == user]
    events = [HistoryEvent(item_id=r.item_id, timestamp=int(r.timestamp), event=r.event, value=float(r.value),
                           domain=r.domain) for r in stored.itertuples()]
    items, scores = answer(recommender, RecommendRequest(history=events, k=20))
    assert items == want_items
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-4)
    assert recommender.recommend(RecommendRequest(user_id=user, k=3)).scoring == "cosine+content"
    _, alone = library_scores(prior_bundle, plain, None)
    assert best_unseen(data, alone, user, 20)[0] != want_items  # the prior moves this user's answer


def test_a_model_without_a_prior_is_scored_by_the_model_alone(bundle, prior_bundle):
    plain = load_trained(prior_bundle.path / "model")
    plain.prior = None  # the zero-shot model with its prior taken away: its cosine alone
    for served, scoring in ((bundle, "dot"), (replace(prior_bundle, trained=plain), "cosine")):
        recommender = BundleRecommender(served, "plain", candidates=CANDIDATES).prepare(load_encoder=False)
        assert recommender.prior is None and recommender.scoring == scoring
        data, expected = library_scores(served, served.trained, None)
        for k in (CANDIDATES, 20):
            items, scores = answer(recommender, RecommendRequest(user_id="1", k=k))
            want_items, want_scores = best_unseen(data, expected, "1", k)
            assert items == want_items
            np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
