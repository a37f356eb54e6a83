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
Without a baseline only rewarded slots have a gradient, so only they are read; with one
(`baseline=True`), r is replaced by the advantage r - mean(r) over the log's slots, so a shown item
that was not rewarded is pushed down (the policy gradient's usual variance reduction; without it, a
few clicks a window pull every user's softmax towards the clicked items and the policy collapses,
docs/benchmarks.md).

Normalised importance sampling (`normalise=True`, one of the paper's variance reductions beside
capping) divides a batch's loss by its sum of weights, not its size: the weights, up to cap * K,
then set only the relative pull of each slot, not the size of the step.

Two ways to learn with it (`continual.objective`): `policy` trains on this loss alone
(`reinforce_finetune`); `mixed` adds it, weighted by `continual.policy_weight`, to every step of the
supervised continual fine-tune (`policy_term`), so the window's interactions keep anchoring the
model while the served lists' rewards correct it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.evaluation.prequential import prequential_split
from components.models.artifacts import TrainedModel
from components.models.model import Recloop, to_device
from components.models.sequences import Sequences, history_sequences
from components.training.loop import LoopResult


def reinforce_loss(logits: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor, behaviour: torch.Tensor,
                   k: int, cap: float, normalise: bool = False) -> torch.Tensor:
    """The top-K off-policy corrected REINFORCE loss of a batch: logits (B, N), actions/reward/behaviour (B,).
    `normalise`: divided by the batch's sum of weights instead of its size (normalised importance
    sampling), so the loss is a weighted mean of -r log pi whatever the weights' scale."""
    log_pi = torch.log_softmax(logits, dim=1).gather(1, actions[:, None]).squeeze(1)  # (B,)
    pi = log_pi.detach().exp()
    weight = torch.clamp(pi / behaviour, max=cap) * k * (1 - pi) ** (k - 1)
    total = weight.sum().clamp(min=1e-12) if normalise else len(weight)
    return -(weight * reward * log_pi).sum() / total


@dataclass
class LoggedSlots:
    """The log's slots as the loss reads them: each from its user's history before the request."""

    histories: Sequences  # row i: the history of slot i
    actions: torch.Tensor  # (S,) item_idx
    reward: torch.Tensor  # (S,) reward, or advantage with a baseline
    behaviour: torch.Tensor  # (S,) the logging policy's per-draw probability
    k: int  # list length

    def __len__(self) -> int:
        return len(self.actions)

    def loss(self, model: Recloop, index: torch.Tensor, cap: float, normalise: bool = False) -> torch.Tensor:
        """The REINFORCE loss of the slots `index` under `model` (on its device)."""
        device = model.tower.text.device
        states = model.last_states(to_device(self.histories.batch(index), device))  # (B, D)
        logits = states @ model.catalog().T  # (B, N)
        return reinforce_loss(logits, self.actions[index].to(device), self.reward[index].to(device),
                              self.behaviour[index].to(device), self.k, cap, normalise)


def logged_slots(trained: TrainedModel, data: SplitData, logged: pd.DataFrame, *, baseline: bool,
                 seed: int) -> LoggedSlots:
    """The slots of `logged` (user_id, item_id, timestamp, position, reward, propensity and optionally
    behaviour) of users and items `data` knows: the rewarded ones, or every one with `baseline`
    (reward minus the mean reward of those slots)."""
    k = int(logged["position"].max()) + 1 if len(logged) else 1
    users = pd.Index(data.users["user_id"].astype(str))
    items = pd.Index(data.items["item_id"].astype(str))
    rows = logged.assign(user_idx=users.get_indexer(logged["user_id"].astype(str)),
                         item_idx=items.get_indexer(logged["item_id"].astype(str)))
    rows = rows[(rows["user_idx"] >= 0) & (rows["item_idx"] >= 0)].reset_index(drop=True)
    reward = rows["reward"].to_numpy(np.float32)
    if not (reward > 0).any():
        raise RecloopError("the log holds no rewarded slot of a known user and item: nothing for the policy "
                           "objective to learn (continual.objective=supervised learns from interactions)")
    if baseline:
        reward = reward - reward.mean()
    else:
        rows, reward = rows[reward > 0].reset_index(drop=True), reward[reward > 0]
    behaviour = rows["behaviour"] if "behaviour" in rows else rows["propensity"]
    targets = pd.DataFrame({"user_id": rows["user_id"].astype(str), "item_id": rows["item_id"].astype(str),
                            "timestamp": rows["timestamp"].astype("int64"), "event": "click", "value": 1.0,
                            "domain": "default", "user_idx": rows["user_idx"], "item_idx": rows["item_idx"]})
    every = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    pre = prequential_split(dataclasses.replace(data, train=every, valid=data.valid.iloc[:0], test=targets), seed=seed)
    return LoggedSlots(history_sequences(pre.data, trained.vocab, "test", trained.model.config.max_len),
                       torch.as_tensor(rows["item_idx"].to_numpy(np.int64)), torch.as_tensor(reward),
                       torch.as_tensor(behaviour.to_numpy(np.float32)).clamp(min=1e-6), k)


def reinforce_finetune(trained: TrainedModel, data: SplitData, logged: pd.DataFrame, *, lr: float, epochs: int,
                       batch_size: int, cap: float, seed: int, baseline: bool = False,
                       normalise: bool = False) -> LoopResult:
    """Train `trained` in place on the slots of `logged` (see `logged_slots`) with the REINFORCE loss alone."""
    slots = logged_slots(trained, data, logged, baseline=baseline, seed=seed)
    model = trained.model
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history, start = [], time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for chunk in torch.randperm(len(slots), generator=generator).split(batch_size):
            loss = slots.loss(model, chunk, cap, normalise)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(chunk)
        history.append({"epoch": epoch, "loss": total / len(slots)})
    model.eval()
    return LoopResult(rows=len(slots), epochs=epochs, best_epoch=epochs, best_score=float("nan"), history=history,
                      seconds=time.perf_counter() - start)


def policy_term(trained: TrainedModel, data: SplitData, logged: pd.DataFrame, *, weight: float, batch_size: int,
                cap: float, seed: int, baseline: bool = False, normalise: bool = False) -> Callable[[], torch.Tensor]:
    """`weight` times the REINFORCE loss of the next `batch_size` slots of `logged` (cycling through
    seeded permutations), for the training loop to add to each supervised step (`extra_loss`)."""
    slots = logged_slots(trained, data, logged, baseline=baseline, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    queue: list[torch.Tensor] = []

    def term() -> torch.Tensor:
        if not queue:
            queue.extend(torch.randperm(len(slots), generator=generator).split(batch_size))
        return weight * slots.loss(trained.model, queue.pop(0), cap, normalise)

    return term
