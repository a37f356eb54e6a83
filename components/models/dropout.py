"""Dropout whose mask is cut from 64-bit random words, for the CPU.

torch's CPU dropout draws one Bernoulli number per element (about 16 ns each on this project's 2-core
EPYCs): the encoder's seven dropouts took a fifth of a Sports training step (46 of 236 ms at batch
1,024 prefixes). Here one 64-bit draw gives four 16-bit uniforms, each compared with the drop share:
an element is dropped with probability p' = round(65,536 p) / 65,536 (p itself for p = 0.5, within
8e-6 of it otherwise) and a kept one is scaled by 1 / (1 - p'), so the expectation is the input's,
as with torch's dropout. The draws come from torch's default generator, so `torch.manual_seed`
makes them repeat. On a GPU, torch's own kernels are fast and used as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A boolean tensor of `shape`, each element True with probability 1 - round(65,536 p) / 65,536."""
    n = torch.Size(shape).numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    uniforms = words.view(torch.int16)[:n].view(shape)  # each in [-32,768, 32,767], uniform
    return uniforms >= round(p * _LEVELS) - _LEVELS // 2


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the mask of `keep_mask` on the CPU."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * _LEVELS)
    if dropped >= _LEVELS:
        return torch.zeros_like(x)
    keep = keep_mask(x.shape, p, x.device)
    return torch.where(keep, x * (_LEVELS / (_LEVELS - dropped)), 0.0)


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout`; it holds no weights, so state dicts are unchanged."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
