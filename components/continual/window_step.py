"""One continual step on a new window: grow the catalog, hold out the window's latest interactions,
fine-tune a challenger from the champion, score both and gate.

Both doors of the loop run it: `retrain` (the stage) puts the registry and the service around it;
`simulate` (the replay) puts the monitor's verdict between its halves (`open_window`, then
`challenge` where a retrain is due) and loops over the windows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.config import ContinualConfig, FinetuneConfig, LabelsConfig
from components.continual.finetune import continual_finetune, grow_model
from components.continual.gate import GateDecision, compare
from components.continual.window_split import grow_ids, grow_items, holdout_split, on_catalog, sample_users
from components.data.dataset import SplitData
from components.features.text import TextOf
from components.models.artifacts import TrainedModel
from components.models.scoring import RecloopScorer
from components.training.loop import LoopResult


@dataclass
class OpenWindow:
    """A new window on the grown catalog."""

    data: SplitData  # history + window; `test` holds the window's latest interactions, the gate's targets
    text: np.ndarray  # raw text vectors of `data.items`
    champion: TrainedModel  # the champion grown to `data`'s catalog, as it serves the new items (by their text)
    new_items: int


@dataclass
class Challenge:
    """A challenger trained on an open window and the gate's decision on it."""

    challenger: TrainedModel
    training: LoopResult
    decision: GateDecision


def open_window(champion: TrainedModel, items: pd.DataFrame, catalog: pd.DataFrame | None,
                history: pd.DataFrame, rows: pd.DataFrame, users: pd.DataFrame, text_of: TextOf,
                holdout_share: float) -> OpenWindow:
    """The window `rows` after `history`, on the champion's catalog grown by the items first seen since.

    `items` starts with the champion's items (any rows after them, grown for a challenger that was
    refused, are grown again); `catalog` describes new items (None: by id only). `users` are the
    known users, new ones are appended. The window's latest `holdout_share` is held out (`holdout_split`).
    """
    known = len(champion.item_ids)
    seen = pd.concat([history["item_id"], rows["item_id"]])
    grown = grow_items(items.iloc[:known], catalog, grow_ids(champion.item_ids, seen))
    data = holdout_split(grown, history, rows, users, holdout_share)
    text = text_of(data.items)
    return OpenWindow(data, text, grow_model(champion, data, text), data.n_items - known)


def challenge(champion: TrainedModel, window: OpenWindow, guard: SplitData, cfg: ContinualConfig,
              finetune: FinetuneConfig, seed: int, *, since: int, labels: LabelsConfig = LabelsConfig(),
              logged: pd.DataFrame | None = None,
              ope: Callable[[TrainedModel, TrainedModel], dict | None] | None = None) -> Challenge:
    """Fine-tune a challenger from `champion` on `window` (interactions at or after `since` are new, see
    `continual_finetune`; `logged`: the served lists the policy objectives learn from), then gate it
    against the grown champion: on the window's held-out targets, on `guard` (the original split,
    whose test set checks forgetting; a seeded sample of `cfg.max_guard_users` of its users), and on
    `ope(grown champion, challenger)`, their off-policy estimates, where given.
    """
    data = window.data
    challenger, training = continual_finetune(champion, data, window.text, cfg, finetune, seed, since=since,
                                                labels=labels, logged=logged)
    guard = on_catalog(guard, data.items, data.users)
    guard_users = sample_users(guard.test["user_idx"].to_numpy(), cfg.max_guard_users, seed)
    estimates = ope(window.champion, challenger) if ope is not None else None
    decision = compare(RecloopScorer(window.champion, "champion").fit(data),
                       RecloopScorer(challenger, "challenger").fit(data), data, guard, cfg, guard_users, seed,
                       estimates)
    return Challenge(challenger, training, decision)
