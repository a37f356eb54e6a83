"""Users' interactions as plain arrays, and their encoding into the model's batch on the request path.

Serving merges a user's stored history with what arrived since (acknowledged feedback, a request's
ad-hoc events) and encodes it without building a table: per-interaction codes are numpy arrays
(`Interactions`), the time codes come from the model's own `time_codes`, and a batch of users is
one padded `SequenceBatch`, one encoder call. Precomputed known-user states come from
`history_sequences` over the whole table; tests check both give the same state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import torch

from components.models.model import Recloop, SequenceBatch
from components.models.sequences import time_codes
from components.models.vocab import Vocab, buckets


@dataclass(frozen=True)
class Interactions:
    """One user's interactions, one entry per position, in time order."""

    items: np.ndarray  # (n,) catalog rows
    timestamps: np.ndarray  # (n,) int64 seconds
    events: np.ndarray  # (n,) event codes (vocabulary index + 1, 0 unknown)
    values: np.ndarray  # (n,) float64, NaN = no value
    domains: np.ndarray  # (n,) domain codes

    def __len__(self) -> int:
        return len(self.items)

    def then(self, later: Interactions) -> Interactions:
        """These followed by `later`, ordered by time (ties keep this-then-later order)."""
        if not len(later):
            return self
        order = np.argsort(np.concatenate([self.timestamps, later.timestamps]), kind="stable")
        return Interactions(*(np.concatenate([a, b])[order] for a, b in zip(self._columns(), later._columns())))

    def latest(self, n: int) -> Interactions:
        return Interactions(*(column[-n:] for column in self._columns())) if len(self) > n else self

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.items, self.timestamps, self.events, self.values, self.domains


def empty_interactions() -> Interactions:
    return Interactions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros(0, np.float64), np.zeros(0, np.int64))


class VocabCodes:
    """Event and domain names -> the model's codes with dict lookups (a request's few names cost microseconds)."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._events = {name: code + 1 for code, name in enumerate(vocab.events)}
        self._domains = {name: code + 1 for code, name in enumerate(vocab.domains)}

    def events(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._events.get, names, repeat(0)), np.int64, len(names))

    def domains(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._domains.get, names, repeat(0)), np.int64, len(names))


def padded_table(table: torch.Tensor) -> torch.Tensor:
    """(N + 1, D): row 0 zeros (padding), row r + 1 the catalog vector of item r, as the model's batches index it.

    Built once per model: `last_states` pads the whole catalog on every call (a 2.5 MB copy at 10k items,
    a sixth of a one-history encoder call).
    """
    return torch.nn.functional.pad(table, (0, 0, 1, 0))


def encode(model: Recloop, vocab: Vocab, padded: torch.Tensor, histories: list[Interactions],
           profiles: np.ndarray) -> np.ndarray:
    """(B, D) states after each history's last interaction, in one encoder call; `padded` is `padded_table`.

    Each history should hold at most `max_len + 1` interactions: the oldest only gives the next its
    exact time gap, as `history_sequences` does. `profiles` is (B, P) profile codes. The codes of all
    histories are computed together (time gaps within each), then scattered into the right-padded batch.
    """
    max_len = model.config.max_len
    sizes = np.fromiter((len(h) for h in histories), np.int64, len(histories))
    lengths = np.minimum(sizes, max_len)
    width = max(int(lengths.max()), 1)
    owner = np.repeat(np.arange(len(histories)), sizes)
    timestamps = np.concatenate([h.timestamps for h in histories])
    codes = {"items": np.concatenate([h.items for h in histories]) + 1,
             "events": np.concatenate([h.events for h in histories]),
             "values": buckets(np.concatenate([h.values for h in histories]), vocab.value_edges),
             "domains": np.concatenate([h.domains for h in histories]),
             **time_codes(owner, timestamps)}
    # Each interaction's place from its history's end; the last `max_len` of each fill its row from the left.
    ends = np.cumsum(sizes)
    from_end = np.repeat(ends, sizes) - 1 - np.arange(len(owner))
    keep = from_end < max_len
    row, col = owner[keep], (np.repeat(lengths, sizes) - 1 - from_end)[keep]
    batch = {}
    for name, values in codes.items():
        array = np.zeros((len(histories), width), np.int64)
        array[row, col] = values[keep]
        batch[name] = torch.from_numpy(array)
    sequences = SequenceBatch(**batch, profile=torch.from_numpy(np.ascontiguousarray(profiles, np.int64)),
                              lengths=torch.from_numpy(lengths))
    with torch.inference_mode():
        # `last_states` with the padded table built once, and the encoder's last block at the last position only.
        return model.unit(model.encode_last(sequences, padded[sequences.items])).numpy()
