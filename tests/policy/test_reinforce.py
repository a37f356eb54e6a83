"""The top-K off-policy corrected REINFORCE objective: its loss by hand, and as the continual fine-tune
objective on a replayed log (real MovieLens, tiny model) it raises the rewarded items' probability."""
import dataclasses
import math

import continual_data as c
import numpy as np
import pandas as pd
import pytest
import torch

from components.config import ExplorationConfig, ReplayConfig
from components.continual.finetune import continual_finetune
from components.continual.policy_replay import serve, window_requests
from components.continual.window_step import open_window
from components.errors import RecloopError
from components.evaluation.prequential import prequential_split
from components.models.scoring import RecloopScorer
from components.policy.ope import position_weights
from components.policy.reinforce import reinforce_loss


def test_the_loss_weighs_by_the_capped_ratio_and_the_top_k_factor():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # pi = (0.25, 0.75)
    action, reward = torch.tensor([1]), torch.tensor([1.0])
    # weight = min(0.75 / 0.5, cap) * k (1 - 0.75) ** (k - 1) = 1.5 * 2 * 0.25
    loss = reinforce_loss(logits, action, reward, torch.tensor([0.5]), k=2, cap=10.0)
    assert float(loss) == pytest.approx(-0.75 * math.log(0.75))
    capped = reinforce_loss(logits, action, reward, torch.tensor([0.01]), k=2, cap=10.0)
    assert float(capped) == pytest.approx(-10 * 0.5 * math.log(0.75))
    assert float(reinforce_loss(logits, action, torch.tensor([0.0]), torch.tensor([0.5]), 2, 10.0)) == 0.0
    # The gradient raises the rewarded item's logit.
    logits.requires_grad_(True)
    reinforce_loss(logits, action, reward, torch.tensor([0.5]), k=2, cap=10.0).backward()
    assert logits.grad[0, 1] < 0 < logits.grad[0, 0]


def test_the_policy_objective_learns_the_clicked_items():
    cfg = ReplayConfig(windows=1, requests_per_user=5, k=5, candidates=20, position_bias=0.0)
    rows = c.window(0)
    champion = c.champion()
    history = c.history(c.base())
    w = window_requests(champion, c.base().items, c.movies(), history, rows, c.base().users, c.text, cfg, 0, 0)
    served = serve(w.requests, ExplorationConfig(kind="epsilon", epsilon=0.3), cfg, position_weights(5, "rate"), 0)
    assert served.log["reward"].sum() > 5
    opened = open_window(champion, c.base().items, c.movies(), history, rows, c.base().users, c.text, 0.2)
    ids = opened.data.items["item_id"].to_numpy()
    logged = served.log.assign(item_id=ids[served.log["item_idx"].to_numpy()])
    policy = c.CONTINUAL.model_copy(update={"objective": "policy", "epochs": 5, "lr_scale": 3.0})
    with pytest.raises(RecloopError, match="objective=policy learns from logged lists"):
        continual_finetune(champion, opened.data, opened.text, policy, c.TINY_FINETUNE, 0, since=c.CUTOFF)
    learner, result = continual_finetune(champion, opened.data, opened.text, policy, c.TINY_FINETUNE, 0,
                                         since=c.CUTOFF, logged=logged)
    assert result.rows == int(served.log["reward"].sum()) and result.epochs == 5
    assert result.history[-1]["loss"] < result.history[0]["loss"]

    clicked = logged[logged["reward"] > 0]
    data = w.opened.data
    users = {u: i for i, u in enumerate(data.users["user_id"].astype(str))}
    targets = pd.DataFrame({"user_id": clicked["user_id"].astype(str), "item_id": clicked["item_id"].astype(str),
                            "timestamp": clicked["timestamp"], "event": "click", "value": 1.0, "domain": "movies",
                            "user_idx": clicked["user_id"].astype(str).map(users).to_numpy(),
                            "item_idx": clicked["item_idx"].to_numpy()})
    every = pd.concat([data.train, data.valid, data.test], ignore_index=True)
    pre = prequential_split(dataclasses.replace(data, train=every, test=targets))

    def log_prob(model):
        scores = RecloopScorer(model).fit(data).score(pre.data, np.arange(len(targets)), "test")
        return torch.log_softmax(scores, 1)[torch.arange(len(targets)), torch.as_tensor(targets["item_idx"].to_numpy())]

    before, after = log_prob(w.opened.champion), log_prob(learner)
    assert float((after - before).mean()) > 0
