"""The policy learner: REINFORCE from logged rewards with the top-K off-policy correction (Chen et al.,
"Top-K Off-Policy Correction for a REINFORCE Recommender System", WSDM 2019).

The model is read as a softmax policy over the catalog, pi(a | s) = softmax(state . item vectors),
s the user's history before the request. Each logged slot (item a, reward r, behaviour probability
beta) adds to the loss
    - min(pi(a|s) / beta, cap) * K * (1 - pi(a|s)) ** (K - 1) * r * log pi(a|s)
where the importance weight (capped, against its variance) corrects for the lists having been drawn
by another policy, and K (1 - pi) ** (K - 1), the derivative of the chance 1 - (1 - pi) ** K that a
list of K draws holds a, corrects for the item being rewarded when it is anywhere in the list (both
weights without gradient). beta is the logging policy's per-draw probability of a: its probability of
being in the list divided by K (the `behaviour` column; absent: the logged position propensity).
Only rewarded slots have a gradient, so only they are read.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import torch

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.prequential import prequential_split
from components.models.artifacts import TrainedModel
from components.models.model import to_device
from components.models.sequences import history_sequences
from components.training.loop import LoopResult


def reinforce_loss(logits: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor, behaviour: torch.Tensor,
                   k: int, cap: float) -> torch.Tensor:
    """The top-K off-policy corrected REINFORCE loss of a batch: logits (B, N), actions/reward/behaviour (B,)."""
    log_pi = torch.log_softmax(logits, dim=1).gather(1, actions[:, None]).squeeze(1)  # (B,)
    pi = log_pi.detach().exp()
    weight = torch.clamp(pi / behaviour, max=cap) * k * (1 - pi) ** (k - 1)
    return -(weight * reward * log_pi).mean()


def reinforce_finetune(trained: TrainedModel, data: SplitData, logged: pd.DataFrame, *, lr: float, epochs: int,
                       batch_size: int, cap: float, seed: int) -> LoopResult:
    """Train `trained` in place on the rewarded slots of `logged` (user_id, item_id, timestamp, position,
    reward, propensity and optionally behaviour), each from its user's history in `data` before it."""
    k = int(logged["position"].max()) + 1 if len(logged) else 1
    rows = logged[logged["reward"] > 0]
    users = pd.Index(data.users["user_id"].astype(str))
    items = pd.Index(data.items["item_id"].astype(str))
    rows = rows.assign(user_idx=users.get_indexer(rows["user_id"].astype(str)),
                       item_idx=items.get_indexer(rows["item_id"].astype(str)))
    rows = rows[(rows["user_idx"] >= 0) & (rows["item_idx"] >= 0)].reset_index(drop=True)
    if rows.empty:
        raise RecloopError("the log holds no rewarded slot of a known user and item: nothing for the policy "
                           "objective to learn (continual.objective=supervised learns from interactions)")
    behaviour = rows["behaviour"] if "behaviour" in rows else rows["propensity"]
    targets = pd.DataFrame({"user_id": rows["user_id"].astype(str), "item_id": rows["item_id"].astype(str),
                            "timestamp": rows["timestamp"].astype("int64"), "event": "click", "value": 1.0,
                            "domain": "default", "user_idx": rows["user_idx"], "item_idx": rows["item_idx"]})
    every = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    pre = prequential_split(dataclasses.replace(data, train=every, valid=data.valid.iloc[:0], test=targets), seed=seed)
    model = trained.model
    histories = history_sequences(pre.data, trained.vocab, "test", model.config.max_len)
    actions = torch.as_tensor(rows["item_idx"].to_numpy(np.int64))
    reward = torch.as_tensor(rows["reward"].to_numpy(np.float32))
    beta = torch.as_tensor(behaviour.to_numpy(np.float32)).clamp(min=1e-6)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    device = model.tower.text.device
    history, start = [], time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for chunk in torch.randperm(len(rows), generator=generator).split(batch_size):
            states = model.last_states(to_device(histories.batch(chunk), device))  # (B, D)
            logits = states @ model.catalog().T  # (B, N)
            loss = reinforce_loss(logits, actions[chunk].to(device), reward[chunk].to(device), beta[chunk].to(device),
                                  k, cap)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(chunk)
        history.append({"epoch": epoch, "loss": total / len(rows)})
    model.eval()
    return LoopResult(rows=len(rows), epochs=epochs, best_epoch=epochs, best_score=float("nan"), history=history,
                      seconds=time.perf_counter() - start)
