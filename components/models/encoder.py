"""The sequence encoder's blocks: causal self-attention, optionally mixed with a causal frequency filter.

A block is pre-LayerNorm (GPT-style): x + mix(LN(x)), then x + MLP(LN(x)). With `encoder:
attention` the mix is causal self-attention alone. With `encoder: bsarec` a second branch adds
BSARec's filter (Shin et al., AAAI 2024): it keeps the sequence's lowest frequencies and rescales
the rest by a learned per-dimension beta^2, an inductive bias towards the user's slowly changing
taste, which (the paper argues) attention alone learns poorly from sparse data. BSARec blends post-LayerNorm outputs,
`alpha * LN(x + filter) + (1 - alpha) * LN(x + attention)`; in a pre-LayerNorm block the plain
transcription `x + alpha * filter(LN(x)) + (1 - alpha) * attention(LN(x))` adds a unit-scale copy
of LN(x) to a residual stream of scale 0.02 and scales attention down, and it learned markedly
slower on Beauty (valid NDCG@10 0.0561 against 0.0654 after 15 epochs). So here the filter's
output goes through its own projection (initialised small like attention's) and is added with
weight alpha beside attention: x + attention(LN(x)) + alpha * proj(filter(LN(x))).

BSARec filters with an FFT over the whole window, which lets every position see the future: they
train on the last position only, where that is harmless; recloop trains on every position, where it
would leak the answer. Here position t is given the low-pass of its own prefix x_0..x_t, evaluated
at t: the operator BSARec applies at the last position of a full window, applied to each prefix. It is linear,
so it is one lower-triangular (T, T) matrix computed once: a future position never changes an
earlier output, and with right padding a real position never sees padding.

`positions` says how the encoder knows where an item sits: "absolute" adds a learned embedding of
its index in the window (`Recloop.position`; index 0 is the window's oldest item), "relative" gives
attention a learned bias per head and distance t - s between query and key instead (T5 / ALiBi
style, zero at the start), "both" does both. Every position is supervised in one pass; with
absolute positions the item just before the prediction sits at a different index for every
prefix, with relative ones it is always at distance 0, as in models trained on left-padded prefixes
(SASRec, BSARec), where the last index always means "most recent".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.dropout import Dropout, dropout
from components.models.shape import RecloopConfig

ENCODERS = ("attention", "bsarec")
POSITIONS = ("absolute", "relative", "both")


def causal_low_pass(max_len: int, c: int) -> torch.Tensor:
    """(max_len, max_len) lower-triangular weights: row t gives, at position t, the `c // 2 + 1` lowest
    frequencies of the prefix x_0..x_t (an orthonormal real FFT over its t + 1 points)."""
    keep = c // 2 + 1  # BSARec's cut-off: c = 5 keeps the constant and two frequencies
    weights = torch.zeros(max_len, max_len, dtype=torch.float64)
    for n in range(1, max_len + 1):
        spectrum = torch.fft.rfft(torch.eye(n, dtype=torch.float64), dim=0, norm="ortho")  # column s: impulse at s
        spectrum[keep:] = 0
        low = torch.fft.irfft(spectrum, n=n, dim=0, norm="ortho")  # (n, n): column s low-passed
        weights[n - 1, :n] = low[n - 1]  # the newest position's output
    return weights.float()


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float) -> torch.Tensor:
    """Attention of queries (B, H, Tq, d) over keys and values (B, H, T, d), dropout `p` on its weights.

    `mask`: None for causal, else boolean (True: attend) or additive, broadcastable to (B, H, Tq, T).
    SDPA computes it on a GPU and without dropout; with dropout on the CPU, SDPA's own arithmetic
    (softmax(q k^T / sqrt(d) + mask), dropped, times v) runs here so that the mask comes from
    `models/dropout.py` rather than one Bernoulli draw per weight.
    """
    if p == 0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Tq, T)
    if mask is None:
        t = q.shape[-2]
        mask = torch.ones(t, k.shape[-2], dtype=torch.bool, device=q.device).tril(k.shape[-2] - t)
    scores = scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
    return dropout(torch.softmax(scores, dim=-1), p) @ v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: RecloopConfig):
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.resid_dropout = Dropout(config.dropout)
        # Relative positions: a bias per head and distance 0..max_len-1, zero at the start (no preference).
        self.distance_bias = (nn.Parameter(torch.zeros(config.heads, config.max_len))
                              if config.positions in ("relative", "both") else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, d/H)
        # Right padding: a real position only ever looks left, at real positions, so the causal mask suffices.
        mask = None
        if self.distance_bias is not None:
            index = torch.arange(t, device=x.device)
            distance = index.unsqueeze(1) - index.unsqueeze(0)  # (T, T): query t, key s -> t - s
            mask = self.distance_bias[:, distance.clamp(min=0)].masked_fill(distance < 0, -torch.inf).unsqueeze(0)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.resid_dropout(self.proj(y))

    def at(self, h: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(B, D): the output at position `last[b]` of each row only: one query over keys 0..last (in training,
        with `forward`'s dropout)."""
        b, t, d = h.shape
        rows = torch.arange(b, device=h.device)
        weight, bias = self.qkv.weight, self.qkv.bias  # rows: query, key, value
        q = F.linear(h[rows, last], weight[:d], bias[:d]).view(b, self.heads, 1, d // self.heads)
        k, v = F.linear(h, weight[d:], bias[d:]).view(b, t, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        distance = last.unsqueeze(1) - torch.arange(t, device=h.device)  # (B, T): key s -> last - s
        if self.distance_bias is None:
            mask = (distance >= 0).view(b, 1, 1, t)
        else:
            by_distance = self.distance_bias[:, distance.clamp(min=0)].masked_fill(distance < 0, -torch.inf)  # (H, B, T)
            mask = by_distance.transpose(0, 1).unsqueeze(2)  # (B, H, 1, T)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)  # (B, H, 1, d/H)
        return self.resid_dropout(self.proj(y.reshape(b, d)))


class CausalFrequencyFilter(nn.Module):
    """Low frequencies of each prefix kept, the rest (x - low) scaled by a learned beta^2 per dimension,
    then projected back into the residual stream."""

    def __init__(self, config: RecloopConfig):
        super().__init__()
        # BSARec's initialisation: beta^2 starts near 1 (chi-squared, mean 1), differently per dimension.
        self.sqrt_beta = nn.Parameter(torch.randn(config.dim))
        # Derived from two knobs, so not saved: models trained before the filter load unchanged.
        self.register_buffer("low_pass", causal_low_pass(config.max_len, config.filter_c), persistent=False)
        self.proj = nn.Linear(config.dim, config.dim)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        low = torch.einsum("ts,bsd->btd", self.low_pass[:t, :t], x)  # (B, T, D)
        return self.dropout(self.proj(low + self.sqrt_beta ** 2 * (x - low)))

    def at(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(B, D): the output at position `last[b]` of each row only: its low-pass row `last`."""
        low = torch.einsum("bs,bsd->bd", self.low_pass[last, :x.shape[1]], x)
        here = x[torch.arange(len(x), device=x.device), last]
        return self.dropout(self.proj(low + self.sqrt_beta ** 2 * (here - low)))


class MLP(nn.Module):
    def __init__(self, config: RecloopConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.dim, 4 * config.dim), nn.GELU(),
                                 nn.Linear(4 * config.dim, config.dim), Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, config: RecloopConfig):
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {ENCODERS}, got {config.encoder!r}")
        if config.positions not in POSITIONS:
            raise ValueError(f"model.positions must be one of {POSITIONS}, got {config.positions!r}")
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = CausalSelfAttention(config)
        self.filter = CausalFrequencyFilter(config) if config.encoder == "bsarec" else None
        self.alpha = config.filter_alpha
        self.ln_2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        if self.filter is None:
            x = x + self.attn(h)
        else:
            x = x + self.attn(h) + self.alpha * self.filter(h)
        return x + self.mlp(self.ln_2(x))

    def at(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(B, D): `forward(x)` at position `last[b]` of each row, computed there only; the keys and values
        still read every position."""
        h = self.ln_1(x)
        out = x[torch.arange(len(x), device=x.device), last] + self.attn.at(h, last)
        if self.filter is not None:
            out = out + self.alpha * self.filter.at(h, last)
        return out + self.mlp(self.ln_2(out))
