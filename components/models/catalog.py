"""The catalog as the model sees it: text vectors, attribute codes, which items have trained IDs.

`build_model` turns the model params, the fitted vocabulary and a dataset's catalog into a ready
`Recloop`; `load_catalog` refreshes an existing model's catalog buffers for another item table;
`resize_catalog` carries a trained model over to another or a grown catalog (transfer, continual growth);
`parameter_groups` is the one place that says which weights are the catalog's own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import pandas as pd
import torch

from components.config import ModelConfig
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.features.item_sources import ItemSources, load_item_sources
from components.models.artifacts import TrainedModel
from components.models.architecture import recloop_config
from components.models.model import Recloop
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


def load_sources(model: Recloop, sources: ItemSources) -> None:
    """Fill the buffers of the item tower's optional sources (KG neighbourhoods, extra vector tables)."""
    if sources.kg is not None:
        model.tower.load_kg(torch.from_numpy(sources.kg.one_hop), torch.from_numpy(sources.kg.two_hop))
    for name, table in sources.vectors.items():
        model.tower.load_vectors(name, torch.from_numpy(table.vectors), torch.from_numpy(table.present))


def build_model(knobs: ModelConfig, data: SplitData, text: np.ndarray, vocab: Vocab) -> Recloop:
    """A freshly initialised model for `data`'s catalog, with the item sources `knobs` switch on."""
    text = check_text(text, data)
    sources = load_item_sources(knobs, data.items["item_id"].astype(str).tolist())
    model = Recloop(recloop_config(knobs, vocab, data.n_items, text.shape[1], sources))
    load_catalog(model, data, text, vocab)
    load_sources(model, sources)
    return model


def per_catalog_names(model: Recloop) -> set[str]:
    """State-dict names that belong to one catalog: the ID table and the tower's catalog buffers.

    Everything else (text and vector adapters, attribute embeddings keyed by the saved vocabulary,
    encoder, context and scenario embeddings, heads) reads only what any catalog has, so it carries
    across. (A knowledge graph's entity table is the graph's: it carries when a catalog grows, and
    `models/foundation.adopt` refuses it across catalogs.)
    """
    tower = model.tower
    ids = {f"tower.{name}" for name, _ in tower.named_parameters() if name.startswith("id_embedding.")}
    return ids | {f"tower.{name}" for name, _ in tower.named_buffers()}


def parameter_groups(model: Recloop) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(transferable, per-catalog): the model's state split into what carries to another catalog and what not."""
    own = per_catalog_names(model)
    state = model.state_dict()
    return ({k: v for k, v in state.items() if k not in own}, {k: v for k, v in state.items() if k in own})


def resize_catalog(trained: TrainedModel, data: SplitData, text: np.ndarray, *, new_rows: Literal["fresh", "zero"],
                   buffers: Literal["rebuild", "extend"]) -> TrainedModel:
    """`trained` for `data`'s catalog: shared layers as they are, ID rows matched by item_id.

    `new_rows`, the ID rows of items `trained` never saw:
    - "fresh": random, as a model built from scratch has them (transfer: they are trained from there,
      and the seed fixes them);
    - "zero": no ID contribution, so a new item starts exactly where its text and attributes place
      it, the vector the model already served for it as a cold item (growth: the gate compares the
      grown champion as it served, and the challenger moves the rows from there).
    `buffers`, the catalog's text, attributes and which items have text and a trained ID:
    - "rebuild": from `data` and `text` (another catalog: nothing per item carries over);
    - "extend": `data`'s catalog starts with `trained`'s items in order (it grew in place): their
      rows are copied bit for bit and the new rows appended (see `_extend_buffers`).
    """
    text = check_text(text, data)
    source = trained.model
    if text.shape[1] != source.config.text_dim:
        raise RecloopError(f"the model reads {source.config.text_dim}-d text vectors but the features hold "
                           f"{text.shape[1]}-d ones: featurize with the same encoder")
    ids = data.items["item_id"].astype(str).tolist()
    if buffers == "extend" and ids[:source.config.n_items] != trained.item_ids:
        raise RecloopError("the new catalog must start with the model's items in the model's order")
    model = Recloop(replace(source.config, n_items=len(ids)))
    model.load_state_dict(parameter_groups(source)[0], strict=False)
    if model.tower.id_embedding is not None:
        rows = pd.Index(trained.item_ids).get_indexer(ids)
        known = rows >= 0
        with torch.no_grad():
            weight = model.tower.id_embedding.weight
            if new_rows == "zero":
                weight.zero_()
            weight[torch.from_numpy(known)] = source.tower.id_embedding.weight[torch.from_numpy(rows[known])]
    if buffers == "rebuild":
        load_catalog(model, data, text, trained.vocab)
    else:
        _extend_buffers(model, source, data, text, trained.vocab)
    _carry_source_rows(model, source, trained.item_ids, ids)
    return TrainedModel(model.eval(), trained.vocab, ids)


SOURCE_BUFFERS = ("kg_one_hop", "kg_two_hop", "has_kg", "vectors_", "has_vectors_")


@torch.no_grad()
def _carry_source_rows(model: Recloop, source: Recloop, old_ids: list[str], ids: list[str]) -> None:
    """KG and extra-vector rows of the items both catalogs hold, matched by id; other items lack those sources."""
    rows = pd.Index(old_ids).get_indexer(ids)
    known = torch.from_numpy(rows >= 0)
    old = dict(source.tower.named_buffers())
    for name, buffer in model.tower.named_buffers():
        if name.startswith(SOURCE_BUFFERS):
            buffer[known] = old[name][torch.from_numpy(rows[rows >= 0])]


def _extend_buffers(model: Recloop, source: Recloop, data: SplitData, text: np.ndarray, vocab: Vocab) -> None:
    """`source`'s catalog buffers for its items, `data`'s for the items appended after them.

    The rows of `text` for the old items must be those `source` was built with (the featurize cache
    guarantees it), as their centring is kept.
    """
    tower, old = model.tower, source.tower
    n_old = source.config.n_items
    raw = torch.from_numpy(text)
    has_text = raw.norm(dim=1) > 0
    # The source centred its text vectors on its own catalog's mean: new items get the same shift.
    old_has = has_text[:n_old]
    mean = raw[:n_old][old_has].mean(0) if old_has.any() else torch.zeros(raw.shape[1])
    popular = torch.from_numpy(data.item_popularity() > 0)
    attributes = torch.from_numpy(item_attribute_codes(data.items, vocab, source.config.max_item_attributes))
    with torch.no_grad():
        tower.text[:n_old] = old.text
        tower.text[n_old:] = torch.where(has_text[n_old:, None], raw[n_old:] - mean, torch.zeros_like(raw[n_old:]))
        tower.has_text[:n_old] = old.has_text
        tower.has_text[n_old:] = has_text[n_old:]
        tower.attributes[:n_old] = old.attributes
        tower.attributes[n_old:] = attributes[n_old:]
        # An item keeps its trained ID; one that gained training interactions starts using its own.
        tower.has_id.copy_(popular)
        tower.has_id[:n_old] |= old.has_id
