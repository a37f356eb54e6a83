"""Dropout from 64-bit words: torch's dropout in distribution, repeatable under a seed, and in attention's weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.models.dropout import Dropout, dropout, keep_mask
from components.models.encoder import attend


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_the_drop_share_is_p_and_the_kept_are_scaled_to_keep_the_mean(p):
    torch.manual_seed(0)
    x = torch.full((400_000,), 2.0)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # the share's standard error is under 0.001
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0 / (1 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 2.0) < 0.02
    # Neighbours are independent: four uniforms come from one 64-bit word.
    kept = (y != 0).float() - (1 - p)
    for lag in (1, 2, 3, 4):
        assert abs((kept[:-lag] * kept[lag:]).mean().item()) / (p * (1 - p)) < 0.01


def test_a_seed_repeats_the_mask_and_gradients_pass_the_kept_elements_only():
    x = torch.randn(64, 7, 16, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.4)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.4))
    first.sum().backward()
    kept = first != 0
    scale = 65536 / (65536 - round(0.4 * 65536))  # 1 / (1 - p'), p' = 0.4 to 16 bits
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], scale))
    assert (x.grad[~kept] == 0).all()


def test_evaluation_and_zero_share_leave_the_input_alone():
    x = torch.randn(5, 3)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and dropout(x, 0.0) is x
    assert not torch.equal(layer.train()(x), x)
    assert (dropout(x, 1.0) == 0).all()


@pytest.mark.parametrize("relative", [False, True])
def test_attention_drops_its_weights_as_sdpa_would(relative):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 2, 9, 8).unbind(0)  # (B, H, T, d)
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    bias = torch.randn(1, 2, 9, 9).masked_fill(~causal, -torch.inf) if relative else None
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None)
    assert torch.allclose(attend(q, k, v, bias, 0.0), exact)
    torch.manual_seed(5)
    dropped = attend(q, k, v, bias, 0.25)
    torch.manual_seed(5)
    keep = keep_mask((4, 2, 9, 9), 0.25, q.device)
    scores = q @ k.transpose(-2, -1) / 8 ** 0.5 + (bias if relative else torch.zeros(9, 9).masked_fill(~causal, -torch.inf))
    expected = (torch.softmax(scores, -1) * keep / 0.75) @ v
    assert torch.allclose(dropped, expected, atol=1e-6)
