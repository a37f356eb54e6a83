"""Continual fine-tuning: warm-start from the champion, learn the new window plus a replay of older data.

The champion's catalog grows in place: its items keep their rows, new items are appended. Old ID
rows and catalog buffers are copied bit for bit; a new item's ID row starts at zero, so it begins
exactly where its text and attributes place it (the vector the champion already gave it as a cold
item) and training moves it from there. Users need nothing: the model reads histories, so a new
user is served from the interactions they have.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from components.config import ContinualConfig, FinetuneConfig, LabelsConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel
from components.models.catalog import resize_catalog
from components.models.sequences import Sequences, TrainingRows, training_rows
from components.models.vocab import Vocab
from components.policy.reinforce import policy_term, reinforce_finetune
from components.training.finetune import objective
from components.training.loop import LoopResult, configure_torch
from components.training.stage import run, validator
from components.tracking import Tracker

log = logging.getLogger(__name__)


def grow_model(champion: TrainedModel, data: SplitData, text: np.ndarray) -> TrainedModel:
    """A copy of `champion` for `data`'s catalog, which must start with the champion's items in order.

    `text` holds the raw text vectors of `data.items`; rows of the old items must be those the
    champion was built with (the featurize cache guarantees it), as their centring is kept.
    """
    return resize_catalog(champion, data, text, new_rows="zero", buffers="extend")


def continual_rows(data: SplitData, vocab: Vocab, max_len: int, since: int, ratio: float, seed: int,
                   labels: LabelsConfig = LabelsConfig()) -> TrainingRows:
    """What the challenger learns: every training sequence (`max_len + 1` interactions, cut from each
    user's end as full training cuts them) that predicts an interaction at or after `since`, plus a
    seeded sample of `ratio` times as many sequences of older interactions only (replay).
    """
    rows = training_rows(data, vocab, max_len, "all", labels)
    users = rows.sequences.users.numpy()
    index = np.arange(len(users))
    first = np.ones(len(users), bool)
    first[1:] = users[1:] != users[:-1]
    # A user's rows run from the latest back: row `back` predicts the interactions
    # back * max_len .. (back + 1) * max_len - 1 counted from the user's end, and new ones are the latest.
    back = index - np.maximum.accumulate(np.where(first, index, 0))
    train = data.train
    fresh = np.bincount(train["user_idx"].to_numpy()[train["timestamp"].to_numpy() >= since], minlength=data.n_users)
    new = back * max_len < fresh[users]
    if not new.any():
        raise RecloopError("the window leaves nothing to learn before its held-out part: it needs more "
                           "interactions, or a lower continual.holdout_share")
    older = np.flatnonzero(~new)
    replay = np.random.default_rng(seed).choice(older, min(len(older), round(ratio * new.sum())), replace=False)
    keep = torch.from_numpy(np.sort(np.concatenate([np.flatnonzero(new), replay])))
    seq = rows.sequences
    return TrainingRows(Sequences({name: f[keep] for name, f in seq.features.items()}, seq.users[keep],
                                  seq.lengths[keep], seq.profile[keep]), rows.likes[keep], rows.ratings[keep])


def continual_finetune(champion: TrainedModel, data: SplitData, text: np.ndarray, cfg: ContinualConfig,
                       finetune: FinetuneConfig, seed: int, *, since: int, labels: LabelsConfig = LabelsConfig(),
                       tracker: Tracker | None = None,
                       logged: pd.DataFrame | None = None) -> tuple[TrainedModel, LoopResult]:
    """The challenger: the champion grown to `data`'s catalog and fine-tuned on what is new and a replay.

    `data` is a `holdout_split`: its `test` (the window's latest interactions) is held out for the
    gate, `valid` picks the best epoch; training interactions at or after `since` are new (see
    `continual_rows`): the window's start, or earlier where the champion has not learned some
    interactions (a refused challenger's window). The learning rate is `finetune.lr * cfg.lr_scale`.
    With `cfg.objective == "policy"` the challenger learns instead from `logged`, served slots with their
    rewards and propensities (components/policy/reinforce.py); with "mixed" from both, the REINFORCE
    term added to every supervised step.
    """
    configure_torch(finetune.threads, seed)
    challenger = grow_model(champion, data, text)
    if cfg.objective != "supervised" and logged is None:
        raise RecloopError(f"continual.objective={cfg.objective} learns from logged lists with rewards and "
                           "propensities, and none were given")
    if cfg.objective == "policy":
        return challenger, reinforce_finetune(challenger, data, logged, lr=finetune.lr * cfg.lr_scale,
                                              epochs=cfg.epochs, batch_size=finetune.batch_size, cap=cfg.weight_cap,
                                              seed=seed, baseline=cfg.policy_baseline,
                                              normalise=cfg.policy_normalise)
    extra = None
    if cfg.objective == "mixed" and not (logged["reward"] > 0).any():
        log.warning("continual.objective=mixed: the log holds no reward, so only the supervised objective learns")
    elif cfg.objective == "mixed":
        extra = policy_term(challenger, data, logged, weight=cfg.policy_weight, batch_size=finetune.batch_size,
                            cap=cfg.weight_cap, seed=seed, baseline=cfg.policy_baseline,
                            normalise=cfg.policy_normalise)
    rows = continual_rows(data, challenger.vocab, challenger.model.config.max_len, since, cfg.replay_ratio, seed,
                          labels)
    loop_cfg = finetune.model_copy(update={"lr": finetune.lr * cfg.lr_scale, "epochs": cfg.epochs,
                                           "patience": cfg.epochs, "windows": "all", "stop_after_epoch": None})
    validate = validator(challenger, data, labels)
    result = run(challenger, data, rows, objective(finetune), loop_cfg, seed, validate=validate,
                 tracker=tracker, desc="continual", extra_loss=extra)
    return challenger, result
