"""Exact full-softmax cross-entropy over a catalog without the (positions x catalog) logits in memory.

`F.cross_entropy(h @ table.T, target)` materialises an (M, N) logits tensor (6,400 x 9,691 floats is
250 MB for one batch of the embedded data), then log-softmax writes another and the backward pass a
third: the step waits on memory, not on arithmetic. Here the rows go through in chunks small enough
to stay in cache, and because the loss is a scalar the gradients are complete in the same pass:
d loss / d logits = (softmax - onehot) / M for each chunk, so grad_h (M, D) and grad_table (N, D) are
accumulated in forward and backward only scales them by the incoming gradient. Same mathematics, same
float32 arithmetic, the 3 matrix products of the plain version, no recomputation; the memory it holds
is O(chunk x N + (M + N) x D).

How a chunk goes, each choice measured with bench/softmax.py on 2-core EPYCs (docs/benchmarks.md):
- Its logits are held transposed, (N, rows): MKL runs `table @ h.T` at about twice the speed of
  `h @ table.T` (K = 64 is short), and the row count is a multiple of 16 (odd counts halve it).
- They are shifted by the target's logit, not by the row maximum: exp(l_j - l_t) needs no reduction
  first, the target's own term is exactly 1 so the sum cannot underflow, and -log softmax_t is simply
  log sum_j exp(l_j - l_t). A logit ~88 above the target's overflows float32: the sum is then not
  finite and that chunk is redone with the row maximum (`_exact_chunk`).
- They are in base 2 (h scaled by log2 e once): torch vectorises exp2 about 4x faster than exp.
- Dividing by the sum and subtracting the onehot touch only (rows, D) factors, never the chunk: the
  exponentials are used unnormalised and the onehot part of grad_table is an index_add of h.
"""
from __future__ import annotations

import math

import torch

# Logit elements per chunk: 208 rows of the embedded catalog (9,691 items), 8 MB of float32 that
# stay in the 32 MB L3 beside the table; 2^21 and 2^22 measured alike (bench/step.py --chunks),
# smaller chunks lose to per-chunk overhead, larger ones to cache misses.
CHUNK_ELEMENTS = 1 << 21
# Rows per chunk are rounded down to a multiple of this: MKL's kernels ran 173 or 114 columns at
# 70-120 GFLOP/s where 160 or 112 ran at 150-170 (2-core Zen 4).
ROW_ALIGN = 16
LOG2E = 1.0 / math.log(2.0)


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, chunk_elements: int,
                grad_enabled: bool, dtype: torch.dtype) -> torch.Tensor:
        m, n = h.shape[0], table.shape[0]
        # Under no_grad nothing will call backward: the loss alone is wanted.
        need_h, need_table = (grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1])
        rows = max(1, min(m, chunk_elements // max(n, 1)))
        if rows > ROW_ALIGN and rows < m:
            rows -= rows % ROW_ALIGN
        row_loss = h.new_empty(m)
        grad_h = torch.empty_like(h) if need_h else None
        grad_table = torch.zeros_like(table) if need_table else None
        # The products' factors, in `dtype`; the logits' shifts, exponentials and sums stay in h's type.
        factors, base2 = table.to(dtype), (h * LOG2E).to(dtype)
        narrowed = dtype != h.dtype
        buffer = h.new_empty(n * rows)  # one chunk's logits, then their exponentials, (N, c)
        narrow = h.new_empty(n * rows, dtype=dtype) if narrowed else buffer  # the same in `dtype`
        for start in range(0, m, rows):
            stop = min(start + rows, m)
            c, t_chunk, h_chunk = stop - start, target[start:stop], h[start:stop]
            z = torch.mm(factors, base2[start:stop].T, out=narrow[:n * c].view(n, c))  # base-2 logits
            z = buffer[:n * c].view(n, c).copy_(z) if narrowed else z
            z.sub_(z[t_chunk, torch.arange(c, device=h.device)]).exp2_()  # 2^(z_j - z_t) = e^(l_j - l_t)
            total = z.sum(dim=0)
            if not torch.isfinite(total).all():  # a logit ~88 above the target's overflowed: redo this chunk
                loss, probabilities = _exact_chunk(h_chunk, table, t_chunk)
                row_loss[start:stop] = loss
                if need_h:
                    torch.mm(probabilities, table, out=grad_h[start:stop])
                if need_table:
                    grad_table.addmm_(probabilities.T, h_chunk)
                continue
            row_loss[start:stop] = total.log()  # -log softmax_t = log sum_j e^(l_j - l_t)
            inverse = total.reciprocal().unsqueeze(1)
            e = narrow[:n * c].view(n, c).copy_(z) if narrowed else z
            if need_h:  # (softmax - onehot) @ table
                _mm_into(grad_h[start:stop], e.T, factors).mul_(inverse).sub_(table[t_chunk])
            if need_table:  # (softmax - onehot).T @ h, the onehot part added row by row
                _mm_add(grad_table, e, (h_chunk * inverse).to(dtype)).index_add_(0, t_chunk, h_chunk, alpha=-1.0)
        ctx.m = m
        ctx.save_for_backward(grad_h, grad_table)
        return row_loss.mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_table = ctx.saved_tensors
        scale = grad_output / ctx.m  # mean over the rows
        return (grad_h * scale if grad_h is not None else None,
                grad_table * scale if grad_table is not None else None, None, None, None, None)


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out = a @ b, written in place when the types agree, converted when a and b are narrower."""
    return torch.mm(a, b, out=out) if a.dtype == out.dtype else out.copy_(torch.mm(a, b))


def _mm_add(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out += a @ b, fused when the types agree, converted when a and b are narrower."""
    return out.addmm_(a, b) if a.dtype == out.dtype else out.add_(torch.mm(a, b))


def _exact_chunk(h: torch.Tensor, table: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and softmax - onehot for rows whose logits span too much for the shifted sums."""
    log_p = torch.log_softmax(h @ table.T, dim=1)
    picked = torch.arange(len(h), device=h.device)
    loss = -log_p[picked, target]
    probabilities = log_p.exp_()
    probabilities[picked, target] -= 1.0
    return loss, probabilities


def full_softmax_cross_entropy(h: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                               chunk_elements: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean cross-entropy of `h` (M, D) against every row of `table` (N, D), true classes `target` (M,).

    Equal to `F.cross_entropy(h @ table.T, target)` in value and gradients, but holding at most
    `chunk_elements` (default CHUNK_ELEMENTS) logits at a time. The gradients are computed in the
    forward pass (when `h` or `table` requires them and grad mode is on).

    `dtype` (default: h's) is the type of the three matrix products' factors. torch.bfloat16 runs them
    at bfloat16 speed (1.6-2.3x float32's on a CPU with AVX512_BF16; far slower on one without) with the
    logits rounded to 8 significant bits: the loss then agrees to about 1e-4 and the gradients to about
    1e-3 (relative), no longer exactly. Shifts, exponentials, sums and the accumulation stay in h's type.
    """
    return _FullSoftmaxCrossEntropy.apply(h, table, target, chunk_elements or CHUNK_ELEMENTS,
                                          torch.is_grad_enabled(), dtype or h.dtype)
