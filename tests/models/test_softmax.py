"""The chunked full-softmax cross-entropy equals the plain one: value and gradients, every shape."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from recloop_data import TINY_MODEL

from components.models.catalog import build_model
from components.models.sequences import training_rows
from components.models import softmax
from components.models.softmax import full_softmax_cross_entropy
from components.models.vocab import fit_vocab


def inputs(m: int, n: int, d: int, dtype: torch.dtype, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = (scale * torch.randn(m, d, generator=g, dtype=dtype)).requires_grad_()
    table = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return h, table, torch.randint(0, n, (m,), generator=g)


def loss_and_grads(loss_fn, h, table, target, weight: float = 1.0):
    loss = loss_fn(h, table, target)
    grad_h, grad_table = torch.autograd.grad(weight * loss, (h, table))
    return loss.detach(), grad_h, grad_table


def plain(h, table, target):
    return F.cross_entropy(h @ table.T, target)


# (M, N, D, logits per chunk): chunks of 5 rows over 37, 7 over 100 (neither divides M), one row, one chunk.
SHAPES = [(1, 7, 4, None), (37, 50, 8, 250), (100, 1000, 16, 7000), (300, 2000, 16, None), (64, 3, 8, 3)]


@pytest.mark.parametrize("m,n,d,chunk", SHAPES)
def test_equals_plain_cross_entropy_in_float64(m, n, d, chunk):
    h, table, target = inputs(m, n, d, torch.float64)
    expected = loss_and_grads(plain, h, table, target, weight=3.0)
    got = loss_and_grads(lambda *a: full_softmax_cross_entropy(*a, chunk_elements=chunk), h, table, target, 3.0)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("m,n,d,chunk", SHAPES)
def test_equals_plain_cross_entropy_in_float32(m, n, d, chunk):
    h, table, target = inputs(m, n, d, torch.float32)
    expected = loss_and_grads(plain, h, table, target)
    got = loss_and_grads(lambda *a: full_softmax_cross_entropy(*a, chunk_elements=chunk), h, table, target)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_large_logits_stay_finite_and_exact():
    # Logits in the thousands: exp overflows without the row max taken out first.
    h, table, target = inputs(50, 400, 16, torch.float64, scale=300.0)
    assert (h @ table.T).abs().max() > 1000
    expected = loss_and_grads(plain, h, table, target)
    got = loss_and_grads(lambda *a: full_softmax_cross_entropy(*a, chunk_elements=800), h, table, target)
    assert all(torch.isfinite(g).all() for g in got)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_loss_without_gradients_under_no_grad():
    h, table, target = inputs(20, 30, 4, torch.float32)
    with torch.no_grad():
        loss = full_softmax_cross_entropy(h, table, target, chunk_elements=90)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, plain(h, table, target).detach())


def test_symmetric_infonce_as_two_full_softmaxes():
    # The ID-text alignment: cross-entropy over the (K, K) logits and over their transpose.
    z_id, z_text, _ = inputs(40, 40, 8, torch.float64, seed=3)
    labels = torch.arange(40)

    def matrix(a, b, _):
        logits = a @ b.T / 0.07
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def chunked(a, b, _):
        return (full_softmax_cross_entropy(a / 0.07, b, labels, chunk_elements=120)
                + full_softmax_cross_entropy(b / 0.07, a, labels, chunk_elements=120)) / 2

    for e, g in zip(loss_and_grads(matrix, z_id, z_text, labels), loss_and_grads(chunked, z_id, z_text, labels)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)


def test_model_training_loss_over_padded_rows_equals_plain(movielens, item_text):
    # Short histories are right-padded: the model keeps only positions with a next item for the loss.
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    model = build_model(TINY_MODEL.model_copy(update={"dropout": 0.0, "id_dropout": 0.0}), movielens,
                        item_text, vocab).double().train()
    rows = training_rows(movielens, vocab, TINY_MODEL.max_len, "last")
    batch, targets = rows.batch(torch.arange(32))
    mask = targets.items > 0
    assert (~mask).any() and mask.sum() > 100  # padding and masked targets are both there

    _, losses = model(batch, targets, tasks=("retrieval",))
    got = torch.autograd.grad(losses["retrieval"], list(model.parameters()), allow_unused=True)
    hidden, _ = model(batch)
    expected_loss = F.cross_entropy(hidden[mask] @ model.catalog().T, targets.items[mask] - 1)
    expected = torch.autograd.grad(expected_loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(losses["retrieval"], expected_loss, rtol=1e-12, atol=1e-14)
    for e, g in zip(expected, got):
        assert (e is None) == (g is None)
        if e is not None:
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_rows_far_above_their_target_are_redone_exactly_in_float32(monkeypatch):
    # Some rows have logits ~100 nats above their target's: exp(l_j - l_t) overflows float32, and
    # those chunks take the row-maximum path; the others keep the shifted one. Both must be exact.
    h, table, target = inputs(48, 300, 8, torch.float32, seed=5)
    with torch.no_grad():
        h[::7] *= 40.0
        target[::7] = (h[::7] @ table.T).argmin(1)
    assert ((h @ table.T).max(1).values - (h @ table.T).gather(1, target[:, None]).squeeze(1)).max() > 100
    redone = []
    exact_chunk = softmax._exact_chunk
    monkeypatch.setattr(softmax, "_exact_chunk", lambda *a: redone.append(len(a[0])) or exact_chunk(*a))
    expected = loss_and_grads(plain, h, table, target)
    got = loss_and_grads(lambda *a: full_softmax_cross_entropy(*a, chunk_elements=300 * 4), h, table, target)
    assert 0 < len(redone) < 48 // 4  # 4 rows per chunk: the chunks holding rows 0, 7, 14, ... only
    assert all(torch.isfinite(g).all() for g in got)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-4)


def test_bfloat16_products_agree_with_plain_to_bfloat16_rounding():
    # Opt-in (TrainingConfig.softmax_precision): the products' factors rounded to 8 significant bits.
    h, table, target = inputs(300, 2000, 16, torch.float32, scale=0.5, seed=8)
    expected = loss_and_grads(plain, h, table, target)
    narrow = loss_and_grads(lambda *a: full_softmax_cross_entropy(*a, dtype=torch.bfloat16), h, table, target)
    exact = loss_and_grads(full_softmax_cross_entropy, h, table, target)
    torch.testing.assert_close(narrow[0], expected[0], rtol=1e-3, atol=0)
    for e, g in zip(expected[1:], narrow[1:]):
        assert (g - e).norm() / e.norm() < 1e-2
    assert not torch.equal(narrow[1], exact[1])  # the products did run in bfloat16
