"""The language model learns inside the recommendation objective: LoRA on the packaged MiniLM, two steps on a CPU."""
from __future__ import annotations

import copy

import torch

from components.config import LMTuningConfig
from components.features.lm_tuning import TunableTextEncoder
from components.training.lm_tuning import tune_if_better, tune_text_encoder

TINY_TUNING = LMTuningConfig(steps=2, batch_size=4, refresh_every=1, max_length=32, lr=1e-3)


def test_lora_steps_move_only_the_adapters_and_recompute_the_text(movielens, trained):
    model = copy.deepcopy(trained["model"])  # the session's model stays as other tests expect it
    encoder = TunableTextEncoder(TINY_TUNING)
    before = {k: v.clone() for k, v in encoder.model.named_parameters()}
    text_before = model.model.tower.text.clone()

    result = tune_text_encoder(model, movielens, TINY_TUNING, seed=0, encoder=encoder, threads=2)

    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert 0 < result.encoder_trainable < result.encoder_parameters / 50  # LoRA: a sliver of the encoder
    moved = {k for k, v in encoder.model.named_parameters() if not torch.equal(v, before[k])}
    assert moved and all("lora_" in k for k in moved)  # the published weights never change
    tower = model.model.tower
    assert tower.text.shape == text_before.shape and not tower.text.requires_grad
    assert not torch.equal(tower.text, text_before)  # re-encoded by the tuned encoder
    assert torch.equal(tower.text[~tower.has_text], text_before[~tower.has_text])  # text-less items stay zero
    with torch.no_grad():
        assert torch.isfinite(model.model.catalog()).all()


def test_with_the_model_frozen_only_the_adapters_learn(movielens, trained):
    model = copy.deepcopy(trained["model"])
    before = {k: v.clone() for k, v in model.model.named_parameters()}
    encoder = TunableTextEncoder(TINY_TUNING)
    lora_before = {k: v.clone() for k, v in encoder.model.named_parameters() if "lora_" in k}

    tune_text_encoder(model, movielens, TINY_TUNING.model_copy(update={"train_model": False}), seed=0,
                      encoder=encoder, threads=2)

    assert all(torch.equal(v, before[k]) for k, v in model.model.named_parameters())
    assert any(not torch.equal(v, lora_before[k]) for k, v in encoder.model.named_parameters() if "lora_" in k)
    assert all(p.requires_grad for p in model.model.parameters())  # as it was: later stages train it


def test_tuning_that_validates_worse_is_undone_and_tuning_that_validates_better_is_kept(movielens, trained):
    for scores, kept in (([0.30, 0.20], False), ([0.20, 0.30], True)):
        model = copy.deepcopy(trained["model"])
        start = {k: v.clone() for k, v in model.model.state_dict().items()}
        validation = iter(scores)

        record = tune_if_better(model, movielens, TINY_TUNING, seed=0,
                                validate=lambda _: {"valid_ndcg@10": next(validation)}, threads=2)

        assert record["lm_tuning_kept"] is kept and record["lm_tuning_steps"] == 2
        assert record["valid_ndcg@10_before_lm_tuning"] == scores[0]
        same = all(torch.equal(v, start[k]) for k, v in model.model.state_dict().items())
        assert same is not kept  # undone: bit for bit the model from before, tuned text vectors and all


def test_a_step_reads_only_the_vectors_the_encoder_computes_now(movielens, trained):
    """Items outside a step's batch hold the last refresh's vectors. A softmax over fresh positives among those
    stale negatives lets the model learn fresh-vs-stale instead of the next item (it collapsed on Scientific), so
    a step's loss must not change whatever the stale rows hold."""
    from components.features.text import compose_item_text
    from components.models.sequences import training_rows
    from components.training.lm_tuning import step_loss

    model = copy.deepcopy(trained["model"])
    net, encoder = model.model.eval(), TunableTextEncoder(TINY_TUNING).eval()  # no dropout: two equal steps
    tokens = encoder.tokenize(compose_item_text(movielens.items).tolist())
    batch, targets = training_rows(movielens, model.vocab, net.config.max_len, "last").batch(torch.arange(4))
    has_text = net.tower.has_text.clone()
    args = (tokens, batch, targets, has_text, torch.zeros(net.tower.text.shape[1]), torch.zeros(net.config.n_items))

    first = step_loss(net, encoder, *args)
    with torch.no_grad():
        net.tower.text[has_text] = torch.randn(int(has_text.sum()), net.tower.text.shape[1])  # every row stale
    assert torch.isfinite(first) and torch.allclose(step_loss(net, encoder, *args), first)
