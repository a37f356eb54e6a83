"""The two properties every encoder variant must keep: later items never change an earlier state, and
padding after a row's end (or a shorter padded width) changes no user state."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from components.models.sequences import history_sequences, training_rows


def assert_causal_and_padding_blind(model, movielens, vocab) -> None:
    rows = training_rows(movielens, vocab, model.config.max_len, "last")
    batch, _ = rows.batch(torch.arange(8))
    with torch.no_grad():
        table = model.catalog()
        hidden = model.encode(batch, model._input_vectors(batch, table))
        assert hidden.shape == (8, batch.items.shape[1], model.config.dim)
        changed = batch.items.clone()
        changed[:, 10:] = torch.where(changed[:, 10:] > 0, 1, 0)  # different later items
        batch.items = changed
        altered = model.encode(batch, model._input_vectors(batch, table))
        assert torch.allclose(hidden[:, :10], altered[:, :10], atol=1e-6)
        assert not torch.allclose(hidden[:, 10:], altered[:, 10:])

        # Rows of short histories, cut to their longest, then padded to the full window.
        histories = history_sequences(movielens, vocab, "valid", model.config.max_len)
        short = torch.nonzero(histories.lengths < 15).flatten()[:8]
        batch = histories.batch(short)
        states = model.last_states(batch, table)
        extra = model.config.max_len - batch.items.shape[1]
        padded = type(batch)(**{k: (F.pad(v, (0, extra)) if k not in ("profile", "lengths") else v)
                                for k, v in vars(batch).items()})
        assert len(short) == 8 and extra > 0
        assert torch.allclose(states, model.last_states(padded, table), atol=1e-6)
