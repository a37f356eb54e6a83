"""The serving bundle: one folder holding everything the service needs, logged to MLflow as one model.

    model/              the fine-tuned model folder as training wrote it (weights, config, vocab,
                        item ids, item vectors)
    items.parquet       catalog row i = model item i: item_id, title, categories, domain, cold, popularity
    item_text.npy       (items, text_dim) language-model vectors of the item text: semantic search
    histories.parquet   every known interaction (train + valid + test): stored user histories
    users.parquet       user profiles (whatever attributes the source had)
    encoder/            the text encoder, only when it was a local folder (the packaged MiniLM is a dependency)
    bundle.json         format, encoder name, sizes, the training metrics (with a transferred model's mode)

Nothing here depends on the serving framework: the MLflow pyfunc wrapper and the BentoML service
both load a bundle with `load_bundle`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.dataset import PARTS, SplitData
from components.errors import RecloopError
from components.features.featurize import META_FILE, load_item_text
from components.features.text import PACKAGED_ENCODER
from components.models.artifacts import (
    ITEM_IDS_FILE,
    METRICS_FILE,
    TrainedModel,
    load_trained,
)
from components.training.transfer import MODES

FORMAT = 1
TRAINED = "trained"  # the mode of a model the pipeline trained on its own catalog
BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"
ENCODER_DIR = "encoder"
ITEM_COLUMNS = ["item_id", "title", "categories", "domain", "cold", "popularity"]
HISTORY_COLUMNS = ["user_id", "item_id", "timestamp", "event", "value", "domain"]


@dataclass
class Bundle:
    """A loaded bundle: the model and the tables that turn its item rows into answers."""

    path: Path
    trained: TrainedModel
    items: pd.DataFrame  # ITEM_COLUMNS, row i = model item i
    item_text: np.ndarray  # (items, text_dim) float32, unit rows (zero for items without text)
    histories: pd.DataFrame  # HISTORY_COLUMNS, sorted by (user_id, timestamp)
    users: pd.DataFrame
    meta: dict

    @property
    def mode(self) -> str:
        """How the model was made: the transfer mode `recloop transfer` saved with it (zero-shot, adapter,
        full), or `trained` (the pipeline's own training, and models saved before modes were recorded)."""
        return bundle_mode(self.meta)

    @property
    def encoder(self) -> str:
        """The text encoder that made item_text: a packaged name or the bundled folder."""
        local = self.path / ENCODER_DIR
        return str(local) if local.is_dir() else self.meta["encoder"]


def bundle_mode(meta: dict) -> str:
    """The mode a bundle.json records in its model's metrics (`Bundle.mode`)."""
    mode = meta.get("metrics", {}).get("mode")
    return mode if mode in MODES else TRAINED


def write_bundle(model_dir: Path, split_dir: Path, features_dir: Path, out_dir: Path) -> dict:
    """Assemble a bundle from the training outputs into `out_dir` (created; must not exist). Returns bundle.json."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    item_ids_path = model_dir / ITEM_IDS_FILE
    if not item_ids_path.exists():
        raise RecloopError(f"{model_dir} holds no trained model: run `recloop finetune` first")
    data = SplitData.load(split_dir)
    item_ids = json.loads(item_ids_path.read_text())
    if data.items["item_id"].astype(str).tolist() != item_ids:
        raise RecloopError(f"{model_dir} was trained on another catalog than {split_dir}: "
                           "re-run `recloop finetune` on this split before packaging")
    text = load_item_text(features_dir, data.n_items)
    text_meta_path = Path(features_dir) / META_FILE
    text_meta = json.loads(text_meta_path.read_text()) if text_meta_path.exists() else {}

    out_dir.mkdir(parents=True)
    shutil.copytree(model_dir, out_dir / MODEL_DIR)
    items = data.items.assign(item_id=data.items["item_id"].astype(str), popularity=data.item_popularity())
    for column, default in (("title", ""), ("domain", "default")):
        items[column] = items[column].fillna(default).astype(str) if column in items else default
    if "categories" not in items:
        items["categories"] = [[] for _ in range(len(items))]
    items[ITEM_COLUMNS].to_parquet(out_dir / "items.parquet", index=False)
    np.save(out_dir / "item_text.npy", text.astype(np.float32))
    histories = pd.concat([getattr(data, part) for part in PARTS], ignore_index=True)
    histories = histories.assign(user_id=histories["user_id"].astype(str), item_id=histories["item_id"].astype(str))
    for column, default in (("event", "interaction"), ("value", 1.0), ("domain", "default")):
        if column not in histories:
            histories[column] = default
    histories = histories.sort_values(["user_id", "timestamp"], kind="stable")[HISTORY_COLUMNS]
    histories.to_parquet(out_dir / "histories.parquet", index=False)
    data.users.assign(user_id=data.users["user_id"].astype(str)).to_parquet(out_dir / "users.parquet", index=False)

    encoder = text_meta.get("encoder", PACKAGED_ENCODER)
    if encoder != PACKAGED_ENCODER and Path(encoder).is_dir():
        shutil.copytree(encoder, out_dir / ENCODER_DIR)
    metrics_path = model_dir / METRICS_FILE
    meta = {"format": FORMAT, "created_at": int(time.time()), "encoder": encoder,
            "encoder_max_length": int(text_meta.get("max_length", 128)), "items": data.n_items,
            "users": data.n_users, "interactions": len(histories),
            "metrics": json.loads(metrics_path.read_text()) if metrics_path.exists() else {}}
    (out_dir / BUNDLE_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def build_bundle(model_dir: Path, split_dir: Path, features_dir: Path, parent: Path) -> Path:
    """`write_bundle` into a fresh temporary folder under `parent`; the caller removes it when done."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=parent, prefix=".bundle-")) / "bundle"
    try:
        write_bundle(model_dir, split_dir, features_dir, out)
    except BaseException:
        shutil.rmtree(out.parent, ignore_errors=True)
        raise
    return out


def load_bundle(path: Path | str) -> Bundle:
    """Read a bundle folder (as written by `write_bundle`, or as MLflow / BentoML hand it back)."""
    path = Path(path)
    meta_path = path / BUNDLE_FILE
    if not meta_path.exists():
        raise RecloopError(f"{path} is not a serving bundle (no {BUNDLE_FILE}): package one with `recloop package`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise RecloopError(f"{path} has bundle format {meta.get('format')}, this code reads {FORMAT}: "
                           "re-package the model with this version of recloop")
    trained = load_trained(path / MODEL_DIR)
    items = pd.read_parquet(path / "items.parquet")
    if items["item_id"].tolist() != trained.item_ids:
        raise RecloopError(f"{path}: items.parquet does not match the model's catalog; the bundle is corrupt")
    return Bundle(path=path, trained=trained, items=items,
                  item_text=np.load(path / "item_text.npy").astype(np.float32, copy=False),
                  histories=pd.read_parquet(path / "histories.parquet"),
                  users=pd.read_parquet(path / "users.parquet"), meta=meta)


def find_bundle(root: Path | str) -> Path:
    """The bundle folder inside an MLflow model folder (artifacts/bundle) or `root` itself."""
    root = Path(root)
    for candidate in (root, root / "artifacts" / "bundle", root / "bundle"):
        if (candidate / BUNDLE_FILE).exists():
            return candidate
    found = sorted(p.parent for p in root.rglob(BUNDLE_FILE))
    if not found:
        raise RecloopError(f"no serving bundle ({BUNDLE_FILE}) under {root}")
    return found[0]
