"""The content prior's blend as the service and the evaluator compute it (profiles, standardisation from the
unit rows' moments, NumPy) equals the definition: each side standardised over the catalog by its own scores."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from components.models.content_prior import ContentPrior, blend, content_scores, standardized


def _prior(weight: float) -> ContentPrior:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(40, 6)).astype(np.float32)
    text[7] = 0.0  # an item without text
    return ContentPrior(text, weight, history_items=3)


def _counts(histories: list[np.ndarray], n_items: int, last: int) -> sp.csr_matrix:
    rows = [np.asarray(h)[-last:] for h in histories]
    return sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                          (np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                           np.concatenate(rows).astype(np.int64))), shape=(len(rows), n_items))


def test_the_blend_equals_both_sides_standardised_over_their_scores():
    histories = [np.array([1, 2, 3, 4, 5]), np.array([9, 9]), np.array([], np.int64), np.array([7])]
    model = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 40)).astype(np.float32))
    for weight in (0.3, 1.0):
        prior = _prior(weight)
        counts = _counts(histories, 40, prior.history_items)
        want = blend(model, content_scores(prior.unit, counts), weight)
        np.testing.assert_allclose(prior.profiles(counts), prior.history_profiles(histories), rtol=0, atol=1e-6)
        torch.testing.assert_close(prior.blend(model, prior.history_profiles(histories)), want, rtol=0, atol=1e-5)
    # The last two users' profiles are zero (no history; only an item without text): the model alone decides.
    torch.testing.assert_close(_prior(0.3).blend(model, prior.history_profiles(histories))[2:],
                               0.7 * standardized(model[2:]), rtol=0, atol=1e-6)


def test_filtered_model_scores_stay_filtered():
    prior = _prior(0.5)
    model = torch.zeros(1, 40).normal_(generator=torch.Generator().manual_seed(0))
    model[0, [3, 4]] = -torch.inf
    out = prior.blend(model, prior.history_profiles([np.array([1, 2])]))
    want = blend(model, content_scores(prior.unit, _counts([np.array([1, 2])], 40, 3)), 0.5)
    assert torch.isinf(out[0, [3, 4]]).all()
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
