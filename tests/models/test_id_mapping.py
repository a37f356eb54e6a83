"""The content-to-ID mapping (`model.id_mapping`): it learns, a cold item gets the mapped ID in training, scoring
and the saved model, and with the option off the tower is today's sum with a zero ID for cold items."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from recloop_data import TINY_MODEL, TOY_STORY_3

from components.models.artifacts import ITEM_VECTORS_FILE, TrainedModel, load_trained, save_trained
from components.models.catalog import build_model
from components.models.scoring import RecloopScorer
from components.models.sequences import training_rows
from components.models.vocab import fit_vocab


def tiny(movielens, item_text, **changes):
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    model = build_model(TINY_MODEL.model_copy(update=changes), movielens, item_text, vocab).eval()
    return model, vocab


def cold_row(movielens) -> int:
    return int(pd.Index(movielens.items["item_id"]).get_loc(TOY_STORY_3))


def test_without_the_option_a_cold_item_has_a_zero_id_and_the_tower_is_the_plain_sum(movielens, item_text):
    model, _ = tiny(movielens, item_text)
    tower, cold = model.tower, cold_row(movielens)
    assert tower.id_mapping is None and not any("id_mapping" in k for k in model.state_dict())
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        by_hand = tower.id_vectors(items) + tower.text_vectors(items) + tower.attribute_vectors(items)
        assert torch.equal(tower(items), by_hand)
        ids, present = tower.source_vectors(items)["id"]
    assert not present[cold] and torch.equal(ids[cold], torch.zeros(model.config.dim))


def test_the_alignment_loss_falls_and_trains_only_the_mapping(movielens, item_text):
    model, vocab = tiny(movielens, item_text, id_mapping=True)
    batch, targets = training_rows(movielens, vocab, TINY_MODEL.max_len, "last").batch(torch.arange(64))
    tower, items = model.tower, torch.arange(movielens.n_items)
    with torch.no_grad():  # trained rows that the content does predict, as interactions make them
        tower.id_embedding.weight.copy_(4 * (tower.text_vectors(items) - tower.attribute_vectors(items)))
    ids_before = tower.id_embedding.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(60):
        _, parts = model(batch, targets, tasks=("id_mapping",))
        optimizer.zero_grad(set_to_none=True)
        parts["id_mapping"].backward()
        optimizer.step()
        losses.append(float(parts["id_mapping"].detach()))
    assert losses[0] > 0.5 and losses[-1] < 0.3 * losses[0]
    # The mapping follows the trained rows, never the reverse, and reads the content sources without reshaping them.
    assert torch.equal(tower.id_embedding.weight, ids_before)
    assert tower.text_adapter[0].weight.grad is None and tower.attribute_embedding.weight.grad is None


def test_a_cold_item_gets_the_mapped_id_in_training_scoring_and_the_saved_model(movielens, item_text, tmp_path):
    model, vocab = tiny(movielens, item_text, id_mapping=True, id_dropout=1.0)
    tower, cold = model.tower, cold_row(movielens)
    items = torch.arange(movielens.n_items)
    assert not tower.has_id[cold]
    with torch.no_grad():
        mapped, has_content = tower.mapped_ids(items)
        assert has_content[cold] and mapped[cold].norm() > 0
        ids, present = tower.source_vectors(items)["id"]
        assert present[cold] and torch.equal(ids[cold], mapped[cold])
        warm = tower.has_id
        assert torch.equal(ids[warm], tower.id_embedding.weight[warm])  # eval: trained IDs kept
        model.train()  # ID dropout 1.0: every item is placed by its mapped ID, none by zero
        ids, present = tower.source_vectors(items)["id"]
        assert torch.equal(ids, mapped) and torch.equal(present, has_content)
        model.eval()
        table = model.catalog()
        assert torch.allclose(table[cold], mapped[cold] + tower.text_vectors(items)[cold]
                              + tower.attribute_vectors(items)[cold], atol=1e-6)

    # The scorer ranks with those vectors, and a saved model keeps the mapping: same scores after loading.
    trained = TrainedModel(model, vocab, movielens.items["item_id"].astype(str).tolist())
    users = np.arange(5)
    scores = RecloopScorer(trained).fit(movielens).score(movielens, users, "test")
    save_trained(trained, tmp_path / "model", {})
    loaded = load_trained(tmp_path / "model")
    assert torch.equal(RecloopScorer(loaded).fit(movielens).score(movielens, users, "test"), scores)
    served = np.load(tmp_path / "model" / ITEM_VECTORS_FILE)
    assert np.allclose(served[cold], table[cold].numpy(), atol=1e-6)
    with torch.no_grad():
        loaded.model.tower.id_mapping.net[-1].weight.zero_()
        loaded.model.tower.id_mapping.net[-1].bias.zero_()
        assert not torch.allclose(loaded.model.catalog()[cold], table[cold])
