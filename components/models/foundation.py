"""A foundation: the transferable part of a model trained on several catalogs, and how a new catalog adopts it.

Item IDs are private to a catalog; item text is not. A foundation keeps what reads only text,
attributes (through its saved vocabulary), context and sequences: the text adapter, the attribute
embeddings, the encoder, the context and scenario (domain) embeddings and the heads
(`catalog.parameter_groups`). `adopt` builds a model for any catalog featurized with the same
encoder: its items are placed by their text and attributes alone, its ID rows start small and
random as in a fresh model, and a domain the foundation never saw gets its own scenario row, zero
until it learns.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.atomic import staged_dir
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.artifacts import (
    CONFIG_FILE,
    METRICS_FILE,
    SOURCES_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    TrainedModel,
    load_config,
    require_files,
)
from components.models.catalog import check_text, load_catalog, parameter_groups, per_catalog_names
from components.models.model import Recloop
from components.models.shape import RecloopConfig
from components.models.vocab import Vocab


@dataclass
class Foundation:
    """Transferable weights, the architecture they fit, the vocabulary they were trained with and their sources."""

    config: RecloopConfig  # n_items is the pretraining catalog's: only the shared layers' shapes matter
    state: dict[str, torch.Tensor]
    vocab: Vocab
    sources: list[dict]  # one per catalog: domain, items, users, interactions

    def parameters(self) -> int:
        return sum(v.numel() for k, v in self.state.items() if v.is_floating_point())


def foundation_of(trained: TrainedModel, sources: list[dict]) -> Foundation:
    """The transferable part of a trained model."""
    transferable, _ = parameter_groups(trained.model)
    return Foundation(trained.model.config, {k: v.detach().clone() for k, v in transferable.items()},
                      trained.vocab, sources)


def save_foundation(foundation: Foundation, out_dir: Path, metrics: dict) -> None:
    """Write the foundation folder atomically (see `components/models/artifacts.py`)."""
    with staged_dir(out_dir) as tmp:
        torch.save(foundation.state, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(foundation.config), indent=1))
        foundation.vocab.save(tmp / VOCAB_FILE)
        (tmp / SOURCES_FILE).write_text(json.dumps(foundation.sources, indent=1))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")


def load_foundation(model_dir: Path) -> Foundation:
    model_dir = require_files(model_dir, (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, SOURCES_FILE),
                              "not a foundation folder: run `recloop foundation` first, or point "
                              "transfer.foundation at one")
    return Foundation(load_config(model_dir),
                      torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True),
                      Vocab.load(model_dir / VOCAB_FILE), json.loads((model_dir / SOURCES_FILE).read_text()))


def _with_domains(foundation: Foundation, data: SplitData) -> tuple[Vocab, dict[str, torch.Tensor], int]:
    """The vocabulary, weights and domain count with `data`'s unseen domains appended (zero rows: as unknown)."""
    config, vocab, state = foundation.config, foundation.vocab, dict(foundation.state)
    if not config.use_profile:
        return vocab, state, config.n_domains
    seen = {*data.train.get("domain", pd.Series(dtype=str)).astype(str),
            *data.items.get("domain", pd.Series(dtype=str)).dropna().astype(str)}
    new = sorted(seen - set(vocab.domains))
    if not new:
        return vocab, state, config.n_domains
    weight = state["domain.weight"]
    state["domain.weight"] = torch.cat([weight, weight.new_zeros(len(new), weight.shape[1])])
    return replace(vocab, domains=[*vocab.domains, *new]), state, config.n_domains + len(new)


def adopt(foundation: Foundation, data: SplitData, text: np.ndarray, *, ids: bool,
          id_dropout: float | None = None, cosine: bool = False) -> TrainedModel:
    """A model for `data`'s catalog from `foundation`: shared weights as they are, ID rows new.

    `ids=False` (zero-shot): no item uses an ID row, so every item is scored by its text and
    attributes alone. `ids=True` (adapter, full): items with training interactions use their ID
    row, which starts as a fresh model's (normal, std 0.02: small beside the text vectors, and with a
    direction, which the ID-text alignment's cosine needs). `id_dropout` replaces the foundation's
    (a foundation pretrained text-only, with ID dropout 1.0, would otherwise never train its ID rows).
    `cosine`: the model compares directions only (`Recloop.unit`), what zero-shot scoring measured best.
    """
    text = check_text(text, data)
    if foundation.config.use_kg:
        raise RecloopError("the foundation reads a knowledge graph (model.use_kg), whose entities belong to its "
                           "own catalogs: pretrain the foundation with model.use_kg=false to transfer it")
    if text.shape[1] != foundation.config.text_dim:
        raise RecloopError(f"the foundation reads {foundation.config.text_dim}-d text vectors but the target's "
                           f"features hold {text.shape[1]}-d ones: featurize it with the foundation's encoder")
    vocab, state, n_domains = _with_domains(foundation, data)
    config = replace(foundation.config, n_items=data.n_items, n_domains=n_domains, cosine=cosine)
    if id_dropout is not None:
        config = replace(config, id_dropout=id_dropout)
    model = Recloop(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    lacking = set(missing) - per_catalog_names(model)
    if lacking or unexpected:
        raise RecloopError(f"the foundation does not fit this code's model (missing {sorted(lacking)}, "
                           f"unexpected {sorted(unexpected)}): pretrain it again with this version")
    load_catalog(model, data, text, vocab)
    if not ids:
        model.tower.has_id.zero_()
    return TrainedModel(model.eval(), vocab, data.items["item_id"].astype(str).tolist())
