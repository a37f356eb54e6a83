"""Exact full-softmax cross-entropy over a catalog without the (positions x catalog) logits in memory.

`F.cross_entropy(h @ table.T, target)` materialises an (M, N) logits tensor (6,400 x 9,691 floats is
250 MB for one batch of the embedded data), then log-softmax writes another and the backward pass a
third: the step waits on memory, not on arithmetic. Here the rows go through in chunks small enough
to stay in cache. Each chunk's logits are turned into its softmax in place, and because the loss is
a scalar the gradients are complete in the same pass: d loss / d logits = (softmax - onehot) / M for
each chunk, so grad_h (M, D) and grad_table (N, D) are accumulated in forward and backward only
scales them by the incoming gradient. Same mathematics, same float32 arithmetic, 3 matrix products
like the plain version, no recomputation; the memory it holds is O(chunk x N + (M + N) x D).

The logits are computed in base 2 (h scaled by log2 e once, exp(z) = 2^(z log2 e)), so that the
softmax's exponentials are exp2, which torch vectorises about 4x faster than exp on the CPU: 5-10% off
the whole loss on a 2-core Zen 4 EPYC (bench/softmax.py, docs/benchmarks.md). Holding a chunk transposed,
(N, rows), makes its first product faster but its reductions slower: on the larger catalogs it lost.
"""
from __future__ import annotations

import math

import torch

# Logit elements per chunk: 216 rows of the embedded catalog (9,691 items), 8 MB of float32 that
# stay in the 32 MB L3 beside the table; 2^20-2^21 measured fastest on the 2-core EPYCs (bench/step.py
# --chunks), smaller chunks lose to per-chunk overhead, larger ones to cache misses.
CHUNK_ELEMENTS = 1 << 21
LN2 = math.log(2.0)
LOG2E = 1.0 / LN2


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, chunk_elements: int,
                grad_enabled: bool) -> torch.Tensor:
        m, n = h.shape[0], table.shape[0]
        # Under no_grad nothing will call backward: the loss alone is wanted.
        need_h, need_table = (grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1])
        rows = max(1, min(m, chunk_elements // max(n, 1)))
        row_loss = h.new_empty(m)
        grad_h = torch.empty_like(h) if need_h else None
        grad_table = torch.zeros_like(table) if need_table else None
        base2 = h * LOG2E
        buffer = h.new_empty(rows, n)  # one chunk's logits, then its softmax, then its logit gradient
        for start in range(0, m, rows):
            h_chunk, t_chunk = base2[start:start + rows], target[start:start + rows]
            c = len(h_chunk)
            z = torch.mm(h_chunk, table.T, out=buffer[:c])  # (c, N), base-2 logits
            picked = torch.arange(c, device=h.device)
            target_logit = z[picked, t_chunk]
            top = z.amax(dim=1, keepdim=True)  # subtracting the row max keeps exp2 finite
            z.sub_(top).exp2_()
            total = z.sum(dim=1, keepdim=True)
            # ln sum_j e^{z_j} = ln 2 * (top + log2 sum_j 2^{z_j - top}), with z in base 2.
            row_loss[start:start + c] = ((total.log2() + top).squeeze(1) - target_logit) * LN2
            if not (need_h or need_table):
                continue
            z.div_(total)
            z[picked, t_chunk] -= 1.0  # d loss_i / d logits_i = softmax_i - onehot(target_i)
            if need_h:
                torch.mm(z, table, out=grad_h[start:start + c])
            if need_table:
                grad_table.addmm_(z.T, h[start:start + c])
        ctx.m = m
        ctx.save_for_backward(grad_h, grad_table)
        return row_loss.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_table = ctx.saved_tensors
        scale = grad_output / ctx.m  # mean over the rows
        return (grad_h * scale if grad_h is not None else None,
                grad_table * scale if grad_table is not None else None, None, None, None)


def full_softmax_cross_entropy(h: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                               chunk_elements: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of `h` (M, D) against every row of `table` (N, D), true classes `target` (M,).

    Equal to `F.cross_entropy(h @ table.T, target)` in value and gradients, but holding at most
    `chunk_elements` (default CHUNK_ELEMENTS) logits at a time. The gradients are computed in the
    forward pass (when `h` or `table` requires them and grad mode is on).
    """
    return _FullSoftmaxCrossEntropy.apply(h, table, target, chunk_elements or CHUNK_ELEMENTS,
                                          torch.is_grad_enabled())
