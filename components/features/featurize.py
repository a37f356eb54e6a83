"""The featurize stage: one language-model vector per catalog item, aligned with the split's items table."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.atomic import replaced, write_text
from components.config import FeaturizeConfig
from components.data.schema import ITEMS_FILE
from components.errors import RecloopError
from components.features.text import EmbeddingCache, TextEncoder, cache_file, compose_item_text, encode_with_cache

TEXT_VECTORS_FILE = "item_text.npy"
HAS_TEXT_FILE = "item_has_text.npy"
META_FILE = "item_text_meta.json"


@dataclass
class FeaturizeSummary:
    out_dir: Path
    items: int
    dim: int
    encoded_now: int
    without_text: int
    seconds: float

    def describe(self) -> str:
        return (f"featurize: {self.items:,} items -> {self.dim}-d text vectors in {self.out_dir} "
                f"({self.encoded_now:,} newly encoded, the rest from cache; "
                f"{self.without_text:,} items without text get the zero vector) in {self.seconds:.1f}s")


def load_item_text(features_dir: Path, n_items: int | None = None) -> np.ndarray:
    """(items, dim) float32 unit vectors (zero rows for items without text), checked against the catalog size."""
    path = Path(features_dir) / TEXT_VECTORS_FILE
    if not path.exists():
        raise RecloopError(f"{path} is missing: run `recloop featurize` first")
    vectors = np.load(path)
    if n_items is not None and len(vectors) != n_items:
        raise RecloopError(f"{path} has {len(vectors)} rows but the catalog has {n_items} items: "
                           "re-run `recloop featurize` after `recloop split`")
    return vectors


def featurize(cfg: FeaturizeConfig, split_dir: Path, out_dir: Path) -> FeaturizeSummary:
    """Encode every item's text (title, categories, brand, description/tags) once; reuse cached vectors."""
    start = time.perf_counter()
    items_path = Path(split_dir) / ITEMS_FILE
    if not items_path.exists():
        raise RecloopError(f"{items_path} is missing: run `recloop split` first")
    items = pd.read_parquet(items_path)
    texts = compose_item_text(items).tolist()
    model = TextEncoder(cfg.encoder, cfg.max_length, cfg.batch_size)
    cache = EmbeddingCache(cache_file(cfg.cache_dir, cfg.encoder, cfg.max_length))
    vectors, encoded_now = encode_with_cache(model, texts, cache, progress=True)
    has_text = np.array([bool(t.strip()) for t in texts])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"encoder": cfg.encoder, "max_length": cfg.max_length, "dim": int(vectors.shape[1]),
            "items": len(items), "without_text": int((~has_text).sum()),
            "fallback": "items without text get the zero vector; the model places them by ID and attributes"}
    for name, array in ((TEXT_VECTORS_FILE, vectors), (HAS_TEXT_FILE, has_text)):
        with replaced(out_dir / name) as tmp:
            np.save(tmp, array)
    write_text(out_dir / META_FILE, json.dumps(meta, indent=2))
    return FeaturizeSummary(out_dir, len(items), int(vectors.shape[1]), encoded_now,
                            meta["without_text"], time.perf_counter() - start)
