"""The language model learns inside the recommendation objective: LoRA on the packaged MiniLM, two steps on a CPU."""
from __future__ import annotations

import copy

import torch

from components.config import LMTuningConfig
from components.features.lm_tuning import TunableTextEncoder
from components.training.lm_tuning import tune_text_encoder

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
