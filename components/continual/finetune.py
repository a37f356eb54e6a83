"""Continual fine-tuning: warm-start from the champion, learn the new window plus a replay of older data.

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
from components.models.sequences import Sequences, TrainingRows, training_rows
from components.models.vocab import Vocab
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


def continual_rows(data: SplitData, vocab: Vocab, max_len: int, since: int, ratio: float, seed: int,
                   finetune: FinetuneConfig) -> TrainingRows:
    """What the challenger learns: every training sequence (`max_len + 1` interactions, cut from each
    user's end as full training cuts them) that predicts an interaction at or after `since`, plus a
    seeded sample of `ratio` times as many sequences of older interactions only (replay).
    """
    rows = training_rows(data, vocab, max_len, "all", finetune.like_threshold, finetune.like_events)
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
                       finetune: FinetuneConfig, seed: int, *, since: int, tracker: Tracker | None = None
                       ) -> tuple[TrainedModel, LoopResult]:
    """The challenger: the champion grown to `data`'s catalog and fine-tuned on what is new and a replay.

    `data` is a `holdout_split`: its `test` (the window's latest interactions) is held out for the
    gate, `valid` picks the best epoch; training interactions at or after `since` are new (see
    `continual_rows`): the window's start, or earlier where the champion has not learned some
    interactions (a refused challenger's window). The learning rate is `finetune.lr * cfg.lr_scale`.
    """
    configure_torch(finetune.threads, seed)
    challenger = grow_model(champion, data, text)
    rows = continual_rows(data, challenger.vocab, challenger.model.config.max_len, since, cfg.replay_ratio, seed,
                          finetune)
    loop_cfg = finetune.model_copy(update={"lr": finetune.lr * cfg.lr_scale, "epochs": cfg.epochs,
                                           "patience": cfg.epochs, "windows": "all", "stop_after_epoch": None})
    validate = validator(challenger, data, heads=(finetune.like_threshold, finetune.like_events))
    result = run(challenger, data, rows, objective(finetune), loop_cfg, seed, validate=validate,
                 tracker=tracker, desc="continual")
    return challenger, result
