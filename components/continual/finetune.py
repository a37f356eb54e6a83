"""Continual fine-tuning: warm-start from the champion, learn the new window plus a replay of older users.

The champion's catalog grows in place: its items keep their rows, new items are appended. Old ID
rows and catalog buffers are copied bit for bit; a new item's ID row starts at zero, so it begins
exactly where its text and attributes place it (the vector the champion already gave it as a cold
item) and training moves it from there. Users need nothing: the model reads histories, so a new
user is served from the interactions they have.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from components.config import ContinualConfig, FinetuneConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import TrainedModel
from components.models.catalog import check_text, item_attribute_codes
from components.models.model import Recloop
from components.models.sequences import training_rows
from components.training.finetune import objective
from components.training.loop import LoopResult, configure_torch
from components.training.stage import run, validator
from components.training.tracking import Tracker


def grow_model(champion: TrainedModel, data: SplitData, text: np.ndarray) -> TrainedModel:
    """A copy of `champion` for `data`'s catalog, which must start with the champion's items in order.

    `text` holds the raw text vectors of `data.items`; rows of the old items must be those the
    champion was built with (the featurize cache guarantees it), as their centring is kept.
    """
    text = check_text(text, data)
    old = champion.model
    n_old = old.config.n_items
    ids = data.items["item_id"].astype(str).tolist()
    if ids[:n_old] != champion.item_ids:
        raise RecloopError("the new catalog must start with the champion's items in the champion's order")
    model = Recloop(replace(old.config, n_items=len(ids)))
    per_catalog = {"tower.id_embedding.weight", *(f"tower.{name}" for name, _ in old.tower.named_buffers())}
    model.load_state_dict({k: v for k, v in old.state_dict().items() if k not in per_catalog}, strict=False)
    tower, old_tower = model.tower, old.tower
    raw = torch.from_numpy(text)
    has_text = raw.norm(dim=1) > 0
    # The champion centred its text vectors on its own catalog's mean: new items get the same shift.
    old_has = has_text[:n_old]
    mean = raw[:n_old][old_has].mean(0) if old_has.any() else torch.zeros(raw.shape[1])
    popular = torch.from_numpy(data.item_popularity() > 0)
    attributes = torch.from_numpy(item_attribute_codes(data.items, champion.vocab, old.config.max_item_attributes))
    with torch.no_grad():
        if tower.id_embedding is not None:
            tower.id_embedding.weight.zero_()
            tower.id_embedding.weight[:n_old] = old_tower.id_embedding.weight
        tower.text[:n_old] = old_tower.text
        tower.text[n_old:] = torch.where(has_text[n_old:, None], raw[n_old:] - mean, torch.zeros_like(raw[n_old:]))
        tower.has_text[:n_old] = old_tower.has_text
        tower.has_text[n_old:] = has_text[n_old:]
        tower.attributes[:n_old] = old_tower.attributes
        tower.attributes[n_old:] = attributes[n_old:]
        # An item keeps its trained ID; one that gained training interactions starts using its own.
        tower.has_id.copy_(popular)
        tower.has_id[:n_old] |= old_tower.has_id
    return TrainedModel(model.eval(), champion.vocab, ids)


def replay_users(data: SplitData, ratio: float, seed: int) -> np.ndarray:
    """Users whose latest sequence is trained on: every user of the new window (those with a
    `test` target) plus a seeded sample of `ratio` times as many older users.
    """
    new = np.unique(data.test["user_idx"].to_numpy())
    older = np.setdiff1d(np.unique(data.train["user_idx"].to_numpy()), new)
    take = min(len(older), round(ratio * len(new)))
    replay = np.random.default_rng(seed).choice(older, take, replace=False) if take else np.zeros(0, np.int64)
    return np.sort(np.concatenate([new, replay]))


def continual_finetune(champion: TrainedModel, data: SplitData, text: np.ndarray, cfg: ContinualConfig,
                       finetune: FinetuneConfig, seed: int, tracker: Tracker | None = None
                       ) -> tuple[TrainedModel, LoopResult]:
    """The challenger: the champion grown to `data`'s catalog and fine-tuned on the window and a replay.

    `data` is a `holdout_split`: its `test` targets are held out for the gate, `valid` picks the
    best epoch. Each chosen user contributes one sequence, their latest `max_len + 1` interactions,
    so training follows what is new; the learning rate is `finetune.lr * cfg.lr_scale`.
    """
    configure_torch(finetune.threads, seed)
    challenger = grow_model(champion, data, text)
    users = replay_users(data, cfg.replay_ratio, seed)
    train = data.train[data.train["user_idx"].isin(users)]
    rows = training_rows(replace(data, train=train), challenger.vocab, challenger.model.config.max_len, "last",
                         finetune.like_threshold, finetune.like_events)
    loop_cfg = finetune.model_copy(update={"lr": finetune.lr * cfg.lr_scale, "epochs": cfg.epochs,
                                           "patience": cfg.epochs, "windows": "last", "stop_after_epoch": None})
    validate = validator(challenger, data, heads=(finetune.like_threshold, finetune.like_events))
    result = run(challenger, data, rows, objective(finetune), loop_cfg, seed, validate=validate,
                 tracker=tracker, desc="continual")
    return challenger, result
