"""The like head's probabilities for serving, with its first layer split into a catalog, a state and a pair term.

The head (components/models/model.py, `PairHead`) reads [state, item, state * item] through
Linear(3D -> D), GELU, Linear(D -> 1). The first layer is W_s state + (W_i item + b) + W_p (state * item):
the item term depends on the catalog only, so it is computed once per model, and the state term once
per state instead of once per candidate. Same probabilities to float rounding (6e-8 apart); 8 states x
100 candidates took 193 instead of 252 us in process (docs/benchmarks.md). A head of another shape is
called as it is.
"""
from __future__ import annotations

import torch
from torch import nn


class LikeScorer:
    """`scorer(states, owner, rows)`: the like probability of item `rows[j]` after state `states[owner[j]]`."""

    def __init__(self, head: nn.Module, table: torch.Tensor):
        self.head, self.table = head, table
        net = getattr(head, "net", None)
        dim = table.shape[1]
        self.split = (isinstance(net, nn.Sequential) and len(net) == 3 and isinstance(net[0], nn.Linear)
                      and net[0].in_features == 3 * dim and net[0].bias is not None)
        if self.split:
            with torch.inference_mode():
                weight = net[0].weight  # (D, 3D): state, item, pair columns
                self.w_state = weight[:, :dim].T.contiguous()
                self.w_pair = weight[:, 2 * dim:].T.contiguous()
                self.items = table @ weight[:, dim:2 * dim].T + net[0].bias  # (N, D)
            self.rest = net[1:]

    def __call__(self, states: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(M,) probabilities for states (B, D), owner (M,) state indexes and rows (M,) catalog rows."""
        with torch.inference_mode():
            if not self.split:
                return self.head.predict(states[owner], self.table[rows])
            first = (states @ self.w_state)[owner] + self.items[rows] + (states[owner] * self.table[rows]) @ self.w_pair
            return torch.sigmoid(self.rest(first).squeeze(-1))
