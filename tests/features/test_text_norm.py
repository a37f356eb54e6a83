"""Per-catalog normalisation of item-text vectors (standardise, whiten) on real MiniLM vectors of MovieLens titles."""
from __future__ import annotations

import numpy as np
import pytest
from recloop_data import _item_text

from components.errors import RecloopError
from components.features.text_norm import normalise_text


def centred_length(text: np.ndarray) -> float:
    present = np.linalg.norm(text, axis=1) > 0
    return float(np.linalg.norm(text[present] - text[present].mean(0), axis=1).mean())


def test_none_leaves_the_vectors_as_they_are():
    text = _item_text()
    assert np.array_equal(normalise_text(text, "none"), text)


@pytest.mark.parametrize("kind", ["standardize", "whiten"])
def test_centred_rescaled_and_text_less_items_stay_zero(kind):
    text = _item_text().copy()
    text[:3] = 0.0  # items without text
    out = normalise_text(text, kind)
    present = np.linalg.norm(text, axis=1) > 0
    assert out.shape == text.shape and out.dtype == np.float32
    assert not out[~present].any()
    assert np.allclose(out[present].mean(0), 0.0, atol=1e-5)
    # The same mean length as the centred input: the adapter reads inputs of the size it was built for.
    assert np.linalg.norm(out[present], axis=1).mean() == pytest.approx(centred_length(text), rel=1e-4)


def test_standardize_gives_every_dimension_the_same_spread():
    text = _item_text()
    std = normalise_text(text, "standardize").std(0)[text.std(0) > 1e-6]  # a (near-)constant dimension stays so
    assert std.max() / std.min() == pytest.approx(1.0, rel=1e-3)


def test_whitening_flattens_the_spectrum_a_sentence_encoder_crowds_into_few_directions():
    text = _item_text()

    def spread(x: np.ndarray) -> float:  # largest over mean eigenvalue of the covariance
        values = np.linalg.eigvalsh(np.cov(x, rowvar=False))
        return float(values.max() / values.mean())

    out = normalise_text(text, "whiten")
    assert spread(out) < 3 < spread(text) / 3


def test_an_unknown_kind_is_refused():
    with pytest.raises(RecloopError, match="not one of"):
        normalise_text(_item_text(), "pca")
