"""Prefix samples (BSARec's training data): every target once, at the end of its own input, same loss without dropout."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from recloop_data import TINY_MODEL
from test_sequences import transitions

from components.models.catalog import build_model
from components.models.sequences import PrefixRows, training_rows
from components.models.vocab import fit_vocab


def test_every_transition_once_and_only_at_the_last_input(movielens):
    vocab = fit_vocab(movielens, 8, 2)
    rows = training_rows(movielens, vocab, 7, "all")
    prefixes = PrefixRows.of(rows)
    inputs, targets = prefixes.batch(torch.arange(len(prefixes)))
    real = targets.items > 0
    assert len(prefixes) == int((rows.lengths - 1).sum()) and torch.equal(real.sum(1), torch.ones(len(prefixes)))
    # The one supervised position is each sample's last input.
    assert torch.equal(real.float().argmax(1), inputs.lengths - 1)
    users = rows.sequences.users[prefixes.row][:, None].expand_as(real)
    got = Counter(zip(users[real].tolist(), inputs.items[real].tolist(), targets.items[real].tolist()))
    assert got == transitions(movielens)
    # Labels follow their target; every other position has none.
    assert torch.isnan(targets.ratings[~real]).all() and not torch.isnan(targets.ratings[real]).all()


@pytest.mark.parametrize("changes", [{}, {"positions": "relative"}, {"encoder": "bsarec"}])
def test_without_dropout_prefixes_average_to_the_windows_loss(movielens, item_text, changes):
    """Causal attention on right-padded rows: a prefix's last state is the window's state at that position,
    so the mean loss over all prefixes is the windows' mean loss; with dropout they differ. Prefixes run
    the last block at their last position only (`Recloop.encode_last`), windows at every position."""
    vocab = fit_vocab(movielens, 8, 2)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL.model_copy(update=changes), movielens, item_text, vocab).eval()
    rows = training_rows(movielens, vocab, TINY_MODEL.max_len, "last")
    windows = rows.batch(torch.arange(64))
    prefixes = PrefixRows.of(rows)
    samples = torch.nonzero(prefixes.row < 64).squeeze(1)
    with torch.no_grad():
        _, whole = model(*windows, tasks=("retrieval", "rating"))
        _, cut = model(*prefixes.batch(samples), tasks=("retrieval", "rating"))
    assert torch.allclose(whole["retrieval"], cut["retrieval"], rtol=1e-5)
    assert torch.allclose(whole["rating"], cut["rating"], rtol=1e-4)
