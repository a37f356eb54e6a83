"""Model behaviour: causal, padding-blind, ID dropout only in training, the catalog buffers, the losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from causality import assert_causal_and_padding_blind
from recloop_data import TINY_MODEL

from components.models.catalog import build_model
from components.models.model import Negatives
from components.models.sequences import training_rows
from components.models.vocab import fit_vocab


def rows_vocab(movielens):
    return fit_vocab(movielens, 8, 2)


def tiny(movielens, item_text, **changes):
    torch.manual_seed(0)
    vocab = rows_vocab(movielens)
    model = build_model(TINY_MODEL.model_copy(update=changes), movielens, item_text, vocab).eval()
    return model, training_rows(movielens, vocab, TINY_MODEL.max_len, "last")


def test_later_items_and_padding_do_not_change_earlier_states(movielens, item_text):
    model, _ = tiny(movielens, item_text)
    assert_causal_and_padding_blind(model, movielens, rows_vocab(movielens))


def test_id_dropout_only_in_training_and_catalog_masks(movielens, item_text):
    model, _ = tiny(movielens, item_text, id_dropout=0.5)
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        assert torch.equal(model.tower(items), model.tower(items))  # eval: deterministic, IDs kept
        model.train()
        assert not torch.equal(model.tower(items), model.tower(items))
    tower = model.tower
    cold = torch.from_numpy(movielens.item_popularity() == 0)
    assert cold.any() and not tower.has_id[cold].any()  # never-trained items get no ID vector
    assert (tower.id_vectors(items)[cold] == 0).all()
    assert tower.has_text.all()  # every movie has a title


def test_source_dropout_drops_a_named_source_from_some_items_in_training_only(movielens, item_text):
    model, _ = tiny(movielens, item_text, id_dropout=0.0, source_dropout={"attributes": 0.5})
    plain, _ = tiny(movielens, item_text, id_dropout=0.0)  # the same seed: the same weights
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        assert torch.equal(model.tower(items), plain.tower(items))  # eval: every source kept
        model.train()
        torch.manual_seed(1)
        attributes, present = model.tower.content_vectors(items)["attributes"]
        text, has_text = model.tower.content_vectors(items)["text"]
    had = (model.tower.attributes > 0).any(-1)
    dropped = had & ~present
    assert 0.35 < dropped.float().sum() / had.sum() < 0.65  # about half of the items with attributes
    assert (attributes[dropped] == 0).all() and torch.equal(has_text, model.tower.has_text)  # text untouched
    with pytest.raises(ValueError, match="does not have"):
        tiny(movielens, item_text, source_dropout={"kg": 0.5})  # no graph in this tower


def test_sampled_softmax_with_every_item_once_equals_full_softmax(movielens, item_text):
    model, rows = tiny(movielens, item_text, id_dropout=0.0)
    batch, targets = rows.batch(torch.arange(16))
    n = movielens.n_items
    with torch.no_grad():
        _, full = model(batch, targets)
        # Every item once with equal probability: the correction is a constant and the sets coincide.
        negatives = Negatives(torch.arange(n), torch.full((n,), -np.log(n)))
        _, sampled = model(batch, targets, negatives)
    assert torch.allclose(full["retrieval"], sampled["retrieval"], atol=1e-5)


def test_every_task_gives_a_finite_loss_with_gradients(movielens, item_text):
    model, rows = tiny(movielens, item_text)
    model.train()
    batch, targets = rows.batch(torch.arange(16))
    _, losses = model(batch, targets, tasks=("retrieval", "like", "rating", "contrastive"))
    assert set(losses) == {"retrieval", "like", "rating", "contrastive"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.tower.text_adapter[0].weight.grad.abs().sum() > 0
    assert model.task_heads["rating"].net[0].weight.grad.abs().sum() > 0
