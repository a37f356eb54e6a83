"""Users' interactions as plain arrays, and their encoding into the model's batch on the request path.

Serving merges a user's stored history with what arrived since (acknowledged feedback, a request's
ad-hoc events) and encodes it without building a table: per-interaction codes are numpy arrays
(`Interactions`), the time codes come from the model's own `time_codes`, and a batch of users is
one padded `SequenceBatch`, one encoder call. Precomputed known-user states come from
`history_sequences` over the whole table; tests check both give the same state.
"""
from __future__ import annotations

from dataclasses import dataclass

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

    def events(self, names: list[str]) -> np.ndarray:
        return np.fromiter((self._events.get(n, 0) for n in names), np.int64, len(names))

    def domains(self, names: list[str]) -> np.ndarray:
        return np.fromiter((self._domains.get(n, 0) for n in names), np.int64, len(names))


def encode(model: Recloop, vocab: Vocab, table: torch.Tensor, histories: list[Interactions],
           profiles: np.ndarray) -> np.ndarray:
    """(B, D) states after each history's last interaction, in one encoder call.

    Each history should hold at most `max_len + 1` interactions: the oldest only gives the next its
    exact time gap, as `history_sequences` does. `profiles` is (B, P) profile codes.
    """
    max_len = model.config.max_len
    lengths = np.array([min(len(h), max_len) for h in histories], np.int64)
    width = max(int(lengths.max()), 1)
    batch = {name: np.zeros((len(histories), width), np.int64)
             for name in ("items", "events", "values", "gaps", "hours", "weekdays", "domains")}
    for row, history in enumerate(histories):
        codes = {"items": history.items + 1, "events": history.events,
                 "values": buckets(history.values, vocab.value_edges), "domains": history.domains,
                 **time_codes(np.zeros(len(history), np.int64), history.timestamps)}
        n = lengths[row]
        for name, values in codes.items():
            batch[name][row, :n] = values[len(history) - n:]  # right padding: real positions first
    sequences = SequenceBatch(**{name: torch.from_numpy(values) for name, values in batch.items()},
                              profile=torch.from_numpy(np.ascontiguousarray(profiles, np.int64)),
                              lengths=torch.from_numpy(lengths))
    with torch.inference_mode():
        return model.last_states(sequences, table).numpy()
