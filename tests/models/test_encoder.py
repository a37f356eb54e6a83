"""The encoder's blocks: the causal frequency filter (BSARec made causal), its mixing with attention,
relative positions (a learned attention bias by distance), and model folders saved before these knobs existed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from causality import assert_causal_and_padding_blind
from recloop_data import TINY_MODEL

from components.config import ModelConfig
from components.models.artifacts import CONFIG_FILE, TrainedModel, load_trained, save_trained
from components.models.catalog import build_model
from components.models.encoder import causal_low_pass
from components.models.sequences import history_sequences, training_rows
from components.models.vocab import fit_vocab


def bsarec(movielens, item_text, **changes):
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    knobs = TINY_MODEL.model_copy(update={"encoder": "bsarec", "filter_alpha": 0.5, "filter_c": 3, **changes})
    return build_model(knobs, movielens, item_text, vocab).eval(), vocab


def test_low_pass_rows_are_each_prefix_filtered_at_its_end():
    weights = causal_low_pass(12, 5)
    assert torch.equal(weights, weights.tril())  # nothing from the future
    assert torch.allclose(weights.sum(1), torch.ones(12), atol=1e-6)  # a constant passes unchanged
    # Prefixes of up to c points have no frequency above the cut-off: they pass whole.
    assert torch.allclose(weights[:5, :5], torch.eye(5), atol=1e-6)
    # Row t is BSARec's whole-window filter (rfft, keep c // 2 + 1 bins, irfft) applied to x_0..x_t, read at t.
    x = torch.randn(12, 3, dtype=torch.float64)
    for t in (5, 8, 11):
        spectrum = torch.fft.rfft(x[: t + 1], dim=0, norm="ortho")
        spectrum[3:] = 0
        expected = torch.fft.irfft(spectrum, n=t + 1, dim=0, norm="ortho")[t]
        assert torch.allclose(weights[t, : t + 1].double() @ x[: t + 1], expected, atol=1e-5)


def test_bsarec_encoder_shapes_and_causality(movielens, item_text):
    model, vocab = bsarec(movielens, item_text)
    assert_causal_and_padding_blind(model, movielens, vocab)


def test_bsarec_filter_learns_its_beta(movielens, item_text):
    model, vocab = bsarec(movielens, item_text)
    model.train()
    rows = training_rows(movielens, vocab, TINY_MODEL.max_len, "last")
    batch, targets = rows.batch(torch.arange(16))
    _, losses = model(batch, targets)
    losses["retrieval"].backward()
    assert torch.isfinite(losses["retrieval"])
    for block in model.blocks:
        assert block.filter.sqrt_beta.grad is not None and block.filter.sqrt_beta.grad.abs().sum() > 0
    # The filter's matrix is derived from the knobs, never saved.
    assert not any("low_pass" in name for name in model.state_dict())


@pytest.mark.parametrize("encoder", ["attention", "bsarec"])
def test_saved_models_load_and_score_the_same(movielens, item_text, tmp_path, encoder):
    model, vocab = bsarec(movielens, item_text, encoder=encoder)
    ids = movielens.items["item_id"].tolist()
    save_trained(TrainedModel(model, vocab, ids), tmp_path / "m", {})
    if encoder == "attention":
        # A folder saved before the encoder knobs existed: its config.json does not name them.
        config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
        for key in ("encoder", "filter_alpha", "filter_c"):
            del config[key]
        (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config))
    loaded = load_trained(tmp_path / "m").model
    assert loaded.config.encoder == encoder
    histories = history_sequences(movielens, vocab, "test", model.config.max_len)
    batch = histories.batch(torch.arange(0, 32))
    with torch.no_grad():
        assert torch.equal(model.last_states(batch), loaded.last_states(batch))


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(encoder="mamba")
    assert np.isclose(ModelConfig().filter_alpha, 0.7) and ModelConfig().encoder == "attention"


def positioned(movielens, item_text, positions):
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    knobs = TINY_MODEL.model_copy(update={"positions": positions})
    return build_model(knobs, movielens, item_text, vocab).eval(), vocab


def with_distance_bias(model):
    """The model with a non-zero bias per head and distance (it starts at zero, which hides a leak)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.distance_bias.normal_()
    return model


@pytest.mark.parametrize("positions", ["relative", "both"])
def test_relative_positions_are_causal_and_ignore_padding(movielens, item_text, positions):
    model, vocab = positioned(movielens, item_text, positions)
    model = with_distance_bias(model)
    assert (model.position is None) == (positions == "relative")
    assert_causal_and_padding_blind(model, movielens, vocab)


def test_relative_bias_learns(movielens, item_text):
    model, vocab = positioned(movielens, item_text, "relative")
    model.train()
    rows = training_rows(movielens, vocab, TINY_MODEL.max_len, "last")
    batch, targets = rows.batch(torch.arange(16))
    _, losses = model(batch, targets)
    losses["retrieval"].backward()
    for block in model.blocks:
        assert block.attn.distance_bias.grad is not None and block.attn.distance_bias.grad.abs().sum() > 0
    assert not any(name.startswith("position.") for name in model.state_dict())


def test_zero_distance_bias_is_plain_causal_attention(movielens, item_text):
    """`both` with its bias at zero (as initialised) is the absolute model: same weights, same states."""
    absolute, vocab = positioned(movielens, item_text, "absolute")
    both, _ = positioned(movielens, item_text, "both")
    both.load_state_dict(absolute.state_dict(), strict=False)
    histories = history_sequences(movielens, vocab, "test", absolute.config.max_len)
    batch = histories.batch(torch.arange(0, 16))
    with torch.no_grad():
        assert torch.allclose(absolute.last_states(batch), both.last_states(batch), atol=1e-6)


@pytest.mark.parametrize("positions", ["absolute", "relative"])
def test_saved_models_keep_their_positions(movielens, item_text, tmp_path, positions):
    model, vocab = positioned(movielens, item_text, positions)
    if positions == "relative":
        model = with_distance_bias(model)
    save_trained(TrainedModel(model, vocab, movielens.items["item_id"].tolist()), tmp_path / "m", {})
    if positions == "absolute":
        # A folder saved before the positions knob existed.
        config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
        del config["positions"]
        (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config))
    loaded = load_trained(tmp_path / "m").model
    assert loaded.config.positions == positions
    batch = history_sequences(movielens, vocab, "test", model.config.max_len).batch(torch.arange(0, 32))
    with torch.no_grad():
        assert torch.equal(model.last_states(batch), loaded.last_states(batch))


def test_unknown_positions_are_refused():
    with pytest.raises(ValueError, match="positions"):
        ModelConfig(positions="rotary")
    assert ModelConfig().positions == "absolute"
