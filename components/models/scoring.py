"""A trained model behind the evaluator's `Recommender` interface: histories in, catalog scores out.

A model that carries a content prior (`models/content_prior.py`: zero-shot, or chosen after training) is scored
blended with it, as the service scores it: evaluate measures what is served.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import FINETUNED_DIR, TrainedModel, load_trained
from components.models.content_prior import recent_items
from components.models.model import to_device
from components.models.sequences import Sequences, history_sequences

ENCODE_BATCH = 256  # histories per encoder call when scoring


class RecloopScorer:
    """Scores with an already trained model; `fit` only checks that the data has the model's catalog."""

    def __init__(self, trained: TrainedModel, name: str = "recloop", batch_size: int = 1024):
        self.trained = trained
        self.name = name
        self.batch_size = batch_size

    def fit(self, data: SplitData) -> RecloopScorer:
        ids = data.items["item_id"].astype(str).tolist()
        if ids != self.trained.item_ids:
            raise RecloopError(f"the model was trained on a catalog of {len(self.trained.item_ids):,} items that "
                               f"differs from this split's {len(ids):,}: re-run `recloop pretrain` and "
                               "`recloop finetune` on this split")
        self.data_ = data
        self.histories_: dict[str, Sequences] = {}
        self.recent_: dict[str, sp.csr_matrix] = {}  # the content prior's last items per stage
        self.refresh()
        return self

    def refresh(self) -> None:
        """Forget the cached catalog vectors (the model's weights changed, e.g. after a training epoch)."""
        self.table_: torch.Tensor | None = None

    def _histories(self, data: SplitData, stage: str) -> Sequences:
        if data is not self.data_:
            self.fit(data)
        if stage not in self.histories_:
            self.histories_[stage] = history_sequences(data, self.trained.vocab, stage,
                                                       self.trained.model.config.max_len)
        return self.histories_[stage]

    def score(self, data: SplitData, users: np.ndarray, stage: str) -> torch.Tensor:
        """(len(users), n_items) retrieval scores from each user's latest history before `stage`, blended with
        the model's content prior when it has one."""
        model = self.trained.model.eval()
        histories = self._histories(data, stage)
        rows = torch.as_tensor(np.asarray(users), dtype=torch.long)
        with torch.no_grad():
            if self.table_ is None:
                self.table_ = model.catalog()
            device = self.table_.device
            # Encoded shortest first, in batches of similar length: each batch is cut to its longest history,
            # so short histories are not padded to the longest of a random batch (on sparse catalogs most
            # users have a few items and some have max_len; this is most of a validation pass's time).
            order = torch.argsort(histories.lengths[rows], stable=True)
            states = torch.empty(len(rows), model.config.dim, device=device)
            for part in order.split(ENCODE_BATCH):
                states[part.to(device)] = model.last_states(to_device(histories.batch(rows[part]), device),
                                                            self.table_)
            scores = (states @ self.table_.T).cpu()
        prior = self.trained.prior
        if prior is None:
            return scores
        if stage not in self.recent_:
            self.recent_[stage] = recent_items(data.history(stage), data.n_users, data.n_items, prior.history_items)
        return prior.blend(scores, prior.profiles(self.recent_[stage][np.asarray(users)]))

    def head_predictions(self, data: SplitData, stage: str) -> pd.DataFrame:
        """Each pair head's prediction (like probability, rating) of each `stage` target, in target order."""
        model = self.trained.model.eval()
        histories = self._histories(data, stage)
        targets = data.targets(stage)
        users = torch.from_numpy(targets["user_idx"].to_numpy(np.int64))
        items = torch.from_numpy(targets["item_idx"].to_numpy(np.int64))
        predicted: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            device = model.tower.text.device
            for u, i in zip(users.split(self.batch_size), items.split(self.batch_size)):
                for name, value in model.pair_predictions(to_device(histories.batch(u), device), i.to(device)).items():
                    predicted.setdefault(name, []).append(value.cpu())
        columns = {name: torch.cat(values).numpy() for name, values in predicted.items()}
        return pd.DataFrame({"user_idx": targets["user_idx"].to_numpy(), "item_idx": targets["item_idx"].to_numpy(),
                             **columns})


def load_finetuned_scorer(models_dir: Path | None, name: str = "recloop") -> RecloopScorer:
    """A scorer of the finetune stage's model under `models_dir` (paths.models); `fit` checks the catalog."""
    if models_dir is None:
        raise RecloopError("the recloop model needs paths.models: run `recloop finetune` first")
    return RecloopScorer(load_trained(Path(models_dir) / FINETUNED_DIR), name=name)
