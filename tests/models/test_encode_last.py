"""`Recloop.encode_last` (serving's encoder: the last block at each row's last position only) against the full
encoder read at that position, for every block kind and position kind."""
from __future__ import annotations

import pytest
import torch
from recloop_data import TINY_MODEL

from components.models.catalog import build_model
from components.models.sequences import history_sequences
from components.models.vocab import fit_vocab


@pytest.mark.parametrize("encoder", ["attention", "bsarec"])
@pytest.mark.parametrize("positions", ["absolute", "relative", "both"])
def test_encode_last_is_the_full_encoders_last_position(movielens, item_text, encoder, positions):
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    knobs = TINY_MODEL.model_copy(update={"layers": 2, "encoder": encoder, "positions": positions,
                                          "filter_alpha": 0.5, "filter_c": 3})
    model = build_model(knobs, movielens, item_text, vocab).eval()
    with torch.no_grad():  # every weight away from its initial value (zero biases, zero distance biases)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sequences = history_sequences(movielens, vocab, "valid", knobs.max_len)
    # Full windows, short histories and a single interaction in one batch: every row ends elsewhere.
    rows = torch.cat([torch.argsort(sequences.lengths)[:6], torch.argsort(sequences.lengths, descending=True)[:6]])
    batch = sequences.batch(rows)
    assert len(set(batch.lengths.tolist())) > 3
    with torch.inference_mode():
        table = model.catalog()
        vectors = model._input_vectors(batch, table)
        full = model.encode(batch, vectors)[torch.arange(len(rows)), batch.lengths - 1]
        last = model.encode_last(batch, vectors)
    assert last.shape == (len(rows), knobs.dim)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-5)
