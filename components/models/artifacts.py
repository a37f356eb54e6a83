"""A trained model on disk, as the pretrain and finetune stages leave it and evaluate, package and serve read it.

Under paths.models the pretrain stage writes PRETRAINED_DIR and the finetune stage FINETUNED_DIR
(the model that evaluate, package and retrain read); each such folder holds:

    model.pt          weights and catalog buffers (state_dict)
    config.json       RecloopConfig: rebuilds the architecture
    vocab.json        how raw context values map to embedding rows
    item_ids.json     item_id of each catalog row
    item_vectors.npy  (items, dim) float32 item-tower vectors for retrieval / ANN serving
    metrics.json      what the stage measured
    content_prior.json, content_prior.npy
                      only a model blended with a content prior (a zero-shot transfer): its weight, and
                      the item vectors it reads (`components/models/content_prior.py`)

The foundation stage writes FOUNDATION_DIR: only the transferable weights (no ID table, no catalog
buffers), config.json, vocab.json, sources.json (the catalogs and domains it learned from) and
metrics.json; `components/models/foundation.py` reads and adopts it for a new catalog.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from components.atomic import staged_dir
from components.errors import RecloopError
from components.models.content_prior import ContentPrior, load_prior, save_prior
from components.models.model import Recloop
from components.models.shape import RecloopConfig
from components.models.vocab import Vocab

PRETRAINED_DIR = "pretrained"
FINETUNED_DIR = "finetuned"
FOUNDATION_DIR = "foundation"

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
ITEM_IDS_FILE = "item_ids.json"
ITEM_VECTORS_FILE = "item_vectors.npy"
METRICS_FILE = "metrics.json"
SOURCES_FILE = "sources.json"
# Weights saved before the heads became `Recloop.task_heads` (model.pt of older model folders and bundles).
RENAMED_WEIGHTS = {"like_head.": "task_heads.like.", "rating_head.": "task_heads.rating."}
# Config fields added since models were first saved, with the values that describe those older models.
ADDED_CONFIG_FIELDS = {"encoder": "attention", "filter_alpha": 0.7, "filter_c": 5, "positions": "absolute",
                       "use_kg": False, "kg_relations": [], "n_entities": 0, "kg_neighbours": 16, "kg_two_hop": 16,
                       "extra_sources": {}, "source_gates": False,
                       "source_attention": False, "id_mapping": False, "source_dropout": {}, "cosine": False}


@dataclass
class TrainedModel:
    """A model with what it needs to read new data: its vocabulary and its catalog's item ids; and the content
    prior its scores are blended with, when it has one (a zero-shot transfer's)."""

    model: Recloop
    vocab: Vocab
    item_ids: list[str]
    prior: ContentPrior | None = None


def save_trained(trained: TrainedModel, out_dir: Path, metrics: dict) -> None:
    """Write every file into a fresh folder beside `out_dir`, then swap it in: never half a model."""
    with staged_dir(out_dir) as tmp:
        model = trained.model.eval()
        torch.save(model.state_dict(), tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=1))
        trained.vocab.save(tmp / VOCAB_FILE)
        (tmp / ITEM_IDS_FILE).write_text(json.dumps(trained.item_ids))
        with torch.no_grad():
            np.save(tmp / ITEM_VECTORS_FILE, model.catalog().numpy().astype(np.float32))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        if trained.prior is not None:
            save_prior(trained.prior, tmp)


def require_files(model_dir: Path, files: tuple[str, ...], hint: str) -> Path:
    """`model_dir` as a Path once every one of `files` is in it; otherwise a RecloopError naming the missing ones."""
    model_dir = Path(model_dir)
    missing = [f for f in files if not (model_dir / f).exists()]
    if missing:
        raise RecloopError(f"{model_dir} lacks {', '.join(missing)}: {hint}")
    return model_dir


def load_config(model_dir: Path) -> RecloopConfig:
    """A saved model's (or foundation's) config; fields added since it was saved take their old behaviour."""
    return RecloopConfig(**{**ADDED_CONFIG_FIELDS, **json.loads((Path(model_dir) / CONFIG_FILE).read_text())})


def load_trained(model_dir: Path) -> TrainedModel:
    """Rebuild a saved model (in eval mode) with its vocabulary, item ids and content prior (if any)."""
    model_dir = require_files(model_dir, (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, ITEM_IDS_FILE),
                              "run `recloop pretrain` / `recloop finetune` first")
    model = Recloop(load_config(model_dir))
    weights = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict({_current_name(name): value for name, value in weights.items()})
    item_ids, prior = json.loads((model_dir / ITEM_IDS_FILE).read_text()), load_prior(model_dir)
    if prior is not None and len(prior.text) != len(item_ids):
        raise RecloopError(f"{model_dir}: the content prior holds {len(prior.text):,} items, the model "
                           f"{len(item_ids):,}; the folder is corrupt")
    return TrainedModel(model.eval(), Vocab.load(model_dir / VOCAB_FILE), item_ids, prior)


def _current_name(name: str) -> str:
    old = next((prefix for prefix in RENAMED_WEIGHTS if name.startswith(prefix)), None)
    return RENAMED_WEIGHTS[old] + name.removeprefix(old) if old else name
