"""The catalog as the model sees it: text vectors, attribute codes, which items have trained IDs.

`build_model` turns the model params, the fitted vocabulary and a dataset's catalog into a ready
`Recloop`; `load_catalog` refreshes an existing model's catalog buffers for another item table.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import torch

from components.config import ModelConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.model import Recloop, RecloopConfig
from components.models.vocab import Vocab, codes, item_attribute_tokens


def item_attribute_codes(items: pd.DataFrame, vocab: Vocab, slots: int) -> np.ndarray:
    """(items, slots) attribute codes per item (0 = empty slot), the first `slots` known ones."""
    tokens = item_attribute_tokens(items)
    tokens = tokens.assign(code=codes(tokens["token"], vocab.attributes))
    tokens = tokens[tokens["code"] > 0]
    slot = tokens.groupby("row").cumcount().to_numpy()
    keep = slot < slots
    out = np.zeros((len(items), slots), np.int64)
    out[tokens["row"].to_numpy()[keep], slot[keep]] = tokens["code"].to_numpy()[keep]
    return out


def model_config(knobs: ModelConfig, vocab: Vocab, n_items: int, text_dim: int) -> RecloopConfig:
    """The params' model section plus the sizes the data dictates."""
    shared = {f.name for f in fields(RecloopConfig)} & set(type(knobs).model_fields)
    return RecloopConfig(n_items=n_items, text_dim=text_dim, n_attributes=len(vocab.attributes) + 1,
                         n_events=len(vocab.events) + 1, n_value_buckets=len(vocab.value_edges) + 2,
                         n_domains=len(vocab.domains) + 1, profile_sizes=vocab.profile_sizes(),
                         rating_mean=vocab.rating_mean, rating_std=vocab.rating_std,
                         **{name: getattr(knobs, name) for name in shared})


def check_text(text: np.ndarray, data: SplitData) -> np.ndarray:
    text = np.asarray(text, np.float32)
    if text.ndim != 2 or len(text) != data.n_items:
        raise RecloopError(f"item text vectors have shape {text.shape}, expected ({data.n_items}, d): "
                           "re-run `recloop featurize` after `recloop split`")
    return text


def load_catalog(model: Recloop, data: SplitData, text: np.ndarray, vocab: Vocab) -> None:
    """Fill the model's catalog buffers from `data.items` (row i = item_idx i) and its text vectors."""
    text = torch.from_numpy(check_text(text, data))
    attributes = item_attribute_codes(data.items, vocab, model.config.max_item_attributes)
    model.tower.load_catalog(text, text.norm(dim=1) > 0, torch.from_numpy(attributes),
                             torch.from_numpy(data.item_popularity() > 0))


def build_model(knobs: ModelConfig, data: SplitData, text: np.ndarray, vocab: Vocab) -> Recloop:
    """A freshly initialised model for `data`'s catalog."""
    text = check_text(text, data)
    model = Recloop(model_config(knobs, vocab, data.n_items, text.shape[1]))
    load_catalog(model, data, text, vocab)
    return model
