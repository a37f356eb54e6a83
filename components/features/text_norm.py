"""Per-catalog normalisation of item-text vectors, computed from one catalog's item texts alone.

A sentence encoder's vectors of one catalog crowd into a narrow cone whose shape differs from
catalog to catalog (office supplies against lab supplies); a text adapter learned on one catalog
reads another's through that difference. Standardising (each dimension to unit variance) or
whitening (every direction to unit variance, as BERT-whitening and UniSRec's parametric whitening
do) makes each catalog's vectors look alike to the adapter. It reads no interactions, so a
zero-shot catalog can use it. Items without text (zero rows) stay zero.
"""
from __future__ import annotations

import numpy as np

from components.errors import RecloopError

KINDS = ("none", "standardize", "whiten")


def normalise_text(text: np.ndarray, kind: str, shrink: float = 0.1) -> np.ndarray:
    """`text` (N, D) centred on its present rows' mean, then standardised or whitened on them.

    Whitening is ZCA on the covariance shrunk toward its mean eigenvalue by `shrink` (the smallest
    directions of a few thousand items are noise; unshrunk, whitening would blow them up). The result
    is scaled so that its present rows' mean length equals the centred input's: the adapter sees
    inputs of the size it was built for.
    """
    if kind not in KINDS:
        raise RecloopError(f"text normalisation {kind!r} is not one of {', '.join(KINDS)}")
    text = np.asarray(text, np.float32)
    if kind == "none":
        return text
    present = np.linalg.norm(text, axis=1) > 0
    if present.sum() < 2:
        return text
    x = text[present].astype(np.float64)
    x -= x.mean(0)
    if kind == "standardize":
        out = x / np.maximum(x.std(0), 1e-8)
    else:
        cov = x.T @ x / len(x)  # (D, D)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        values, vectors = np.linalg.eigh(cov)
        out = x @ (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    out *= np.linalg.norm(x, axis=1).mean() / max(np.linalg.norm(out, axis=1).mean(), 1e-12)
    result = np.zeros_like(text)
    result[present] = out.astype(np.float32)
    return result
