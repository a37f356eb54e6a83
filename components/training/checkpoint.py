"""Resume state of a training stage: model, optimiser, epoch, RNG streams, early-stopping bookkeeping.

One file per stage, replaced atomically after every epoch, so an interruption at any moment leaves
either the previous epoch's checkpoint or this one, never half of one. A fingerprint of the
configuration and data guards against resuming a run whose inputs have changed since.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from components.atomic import replaced


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able configuration and tensors (data): equal inputs, equal fingerprint."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    with replaced(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The saved state if `path` exists and was written for the same configuration and data, else None."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected_fingerprint:
        print(f"note: {path} was written for other params or data; starting afresh", file=sys.stderr)
        return None
    return state


def remove_checkpoint(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
