"""Interactions -> padded integer tensors the model reads, built once with numpy; a batch is an index slice.

Rows are right-padded: a row's real positions come first, so causal attention alone keeps padding
out of every real position's view, and a batch can be cut to its longest row.
Training rows hold `max_len + 1` interactions: positions 0..T-1 are the input and 1..T the
targets (SASRec-style shifted targets), so one forward pass supervises every position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from components.config import LabelsConfig
from components.data.dataset import SplitData
from components.models.model import GAP_BUCKETS, SequenceBatch, Targets
from components.models.vocab import RATING_EVENTS, Vocab, buckets, codes

# Per-position integer features, in SequenceBatch order (after `items`).
CONTEXT = ("events", "values", "gaps", "hours", "weekdays", "domains")
SECONDS_PER_DAY = 86_400


@dataclass
class Sequences:
    """(R, W) code arrays per feature, and each row's user, length and profile."""

    features: dict[str, torch.Tensor]  # "items" and CONTEXT -> (R, W) int64
    users: torch.Tensor  # (R,) user_idx
    lengths: torch.Tensor  # (R,) real positions
    profile: torch.Tensor  # (R, P)

    def __len__(self) -> int:
        return len(self.users)

    def batch(self, rows: torch.Tensor, lengths: torch.Tensor | None = None) -> SequenceBatch:
        """The rows' inputs (optionally only their first `lengths` positions), cut to the longest row."""
        lengths = self.lengths[rows] if lengths is None else lengths
        width = max(int(lengths.max()), 1) if len(rows) else 1
        f = {name: self.features[name][rows, :width] for name in ("items", *CONTEXT)}
        return SequenceBatch(**f, profile=self.profile[rows], lengths=lengths)


@dataclass
class TrainingRows:
    """Training windows of `max_len + 1` interactions with like and rating labels for every position."""

    sequences: Sequences
    likes: torch.Tensor  # (R, W) 1/0, NaN = no label
    ratings: torch.Tensor  # (R, W) NaN = not rated

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> torch.Tensor:
        """Each row's length, which batches of similar rows are formed by."""
        return self.sequences.lengths

    def batch(self, rows: torch.Tensor) -> tuple[SequenceBatch, Targets]:
        """Inputs from positions 0..T-1, targets from positions 1..T (shifted by one)."""
        inputs = self.sequences.batch(rows, self.sequences.lengths[rows] - 1)
        width = inputs.items.shape[1]
        targets = Targets(items=self.sequences.features["items"][rows, 1:width + 1],
                          likes=self.likes[rows, 1:width + 1], ratings=self.ratings[rows, 1:width + 1])
        return inputs, targets


@dataclass
class PrefixRows:
    """Every prefix of every training window as a sample of its own, supervised at its last position only.

    BSARec's and S3-Rec's training data: each target is predicted from the end of its own input,
    where serving predicts, under its own dropout draw, instead of from the middle of a window
    that shares one draw with its neighbours. The logits cost the same (one row per target); the
    encoder reads about (window length + 1) / 2 times as many positions.
    """

    rows: TrainingRows
    row: torch.Tensor  # (S,) the window a sample cuts
    cut: torch.Tensor  # (S,) its input positions, 1 .. window length - 1

    @classmethod
    def of(cls, rows: TrainingRows) -> PrefixRows:
        targets = (rows.sequences.lengths - 1).clamp(min=0)
        row = torch.repeat_interleave(torch.arange(len(rows)), targets)
        first = torch.cumsum(targets, 0) - targets
        cut = torch.arange(len(row)) - torch.repeat_interleave(first, targets) + 1
        return cls(rows, row, cut)

    @property
    def sequences(self) -> Sequences:
        return self.rows.sequences

    @property
    def lengths(self) -> torch.Tensor:
        return self.cut

    def __len__(self) -> int:
        return len(self.row)

    def batch(self, rows: torch.Tensor) -> tuple[SequenceBatch, Targets]:
        """Inputs from each sample's first `cut` positions; its one target, at position `cut`."""
        window, cut = self.row[rows], self.cut[rows]
        inputs = self.rows.sequences.batch(window, cut)
        width = inputs.items.shape[1]
        last = torch.arange(width).unsqueeze(0) == (cut - 1).unsqueeze(1)
        items = self.rows.sequences.features["items"][window, 1:width + 1]
        return inputs, Targets(items=items.masked_fill(~last, 0),
                               likes=self.rows.likes[window, 1:width + 1].masked_fill(~last, torch.nan),
                               ratings=self.rows.ratings[window, 1:width + 1].masked_fill(~last, torch.nan))


def profile_codes(users: pd.DataFrame, vocab: Vocab) -> np.ndarray:
    """(users, P) profile codes in `vocab.profile_columns` order; 0 where unknown or missing."""
    out = np.zeros((len(users), len(vocab.profile_columns)), np.int64)
    for j, column in enumerate(vocab.profile_columns):
        if column not in users:
            continue
        col = users[column]
        if column in vocab.profile_values:
            out[:, j] = np.where(col.isna(), 0, codes(col, vocab.profile_values[column]))
        else:
            out[:, j] = buckets(pd.to_numeric(col, errors="coerce").to_numpy(np.float64), vocab.profile_edges[column])
    return out


def feedback_labels(frame: pd.DataFrame, vocab: Vocab, labels: LabelsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per interaction: like label (1/0, NaN = none) and explicit rating (NaN = not a rating).

    A rating is a like at or above `labels.like_threshold`. Other events carry a like label only
    when the data has one of `labels.like_events` to tell apart from the rest (a click among
    views); data with a single implicit event has no like labels at all.
    """
    n = len(frame)
    event = frame["event"].astype(str) if "event" in frame else pd.Series([""] * n)
    raw = frame["value"].to_numpy(np.float64) if "value" in frame else np.ones(n)
    rated = event.isin(RATING_EVENTS).to_numpy()
    present = [e for e in labels.like_events if e in vocab.events]
    implicit = event.isin(present).to_numpy(np.float64) if present else np.full(n, np.nan)
    likes = np.where(rated, (raw >= labels.like_threshold).astype(np.float64), implicit)
    return likes.astype(np.float32), np.where(rated, raw, np.nan).astype(np.float32)


def interaction_codes(frame: pd.DataFrame, vocab: Vocab) -> dict[str, np.ndarray]:
    """Per-interaction codes of a frame sorted by (user_idx, timestamp); time gaps are within each user."""
    n = len(frame)
    return {
        "items": frame["item_idx"].to_numpy(np.int64) + 1,
        "events": codes(frame["event"], vocab.events) if "event" in frame else np.zeros(n, np.int64),
        "values": buckets(frame["value"].to_numpy(np.float64) if "value" in frame else np.ones(n), vocab.value_edges),
        **time_codes(frame["user_idx"].to_numpy(np.int64), frame["timestamp"].to_numpy(np.int64)),
        "domains": codes(frame["domain"], vocab.domains) if "domain" in frame else np.zeros(n, np.int64),
    }


def time_codes(user: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """Gap, hour and weekday codes of interactions sorted by (user, timestamp); gaps are within each user.

    Plain numpy, so serving can code a request's history without building a table.
    """
    first = np.ones(len(user), bool)
    first[1:] = user[1:] != user[:-1]
    minutes = np.maximum(np.diff(ts, prepend=ts[:1]), 0) / 60.0
    gap = np.where(first, 1, 2 + np.floor(np.log2(1.0 + minutes))).clip(1, GAP_BUCKETS - 1)
    return {
        "gaps": gap.astype(np.int64),
        "hours": (ts // 3600) % 24 + 1,
        # 1970-01-01 was a Thursday: +3 makes Monday 0.
        "weekdays": (ts // SECONDS_PER_DAY + 3) % 7 + 1,
    }


def _positions(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by user: each row's position from its user's end (0 = last) and the user's count."""
    _, start, count = np.unique(user, return_index=True, return_counts=True)
    count_of = np.repeat(count, count)
    return np.repeat(start + count - 1, count) - np.arange(len(user)), count_of


def _assemble(per: dict[str, np.ndarray], source: np.ndarray, row: np.ndarray, col: np.ndarray,
              n_rows: int, width: int) -> dict[str, np.ndarray]:
    """Scatter the interactions `source` into (n_rows, width) arrays at (row, col); float arrays pad with NaN."""
    out = {}
    for name, values in per.items():
        floating = np.issubdtype(values.dtype, np.floating)
        array = np.full((n_rows, width), np.nan if floating else 0, values.dtype)
        array[row, col] = values[source]
        out[name] = array
    return out


def _sequences(arrays: dict[str, np.ndarray], users: np.ndarray, profile: np.ndarray) -> Sequences:
    lengths = (arrays["items"] > 0).sum(1)
    return Sequences(features={k: torch.from_numpy(v) for k, v in arrays.items()},
                     users=torch.from_numpy(users), lengths=torch.from_numpy(lengths.astype(np.int64)),
                     profile=torch.from_numpy(profile[users]))


def training_rows(data: SplitData, vocab: Vocab, max_len: int, windows: str = "all",
                  labels: LabelsConfig = LabelsConfig()) -> TrainingRows:
    """Training windows from `data.train`: each user's latest `max_len + 1` interactions, and with
    windows="all" also the earlier chunks (overlapping by one interaction, so no target is lost).
    """
    frame = data.train
    per = interaction_codes(frame, vocab)
    per["likes"], per["ratings"] = feedback_labels(frame, vocab, labels)
    user = frame["user_idx"].to_numpy(np.int64)
    from_end, count = _positions(user)
    # Window w holds positions-from-end w*L .. (w+1)*L; the oldest one may be shorter.
    n_windows = np.ceil((count - 1) / max_len).astype(np.int64)
    if windows == "last":
        n_windows = np.minimum(n_windows, 1)
    window = from_end // max_len
    primary = window < n_windows
    # Position (w+1)*L opens window w as its first input, besides being a target in window w+1.
    shared = (from_end % max_len == 0) & (from_end > 0) & (from_end // max_len - 1 < n_windows)
    src = np.concatenate([np.flatnonzero(primary), np.flatnonzero(shared)])
    win = np.concatenate([window[primary], from_end[shared] // max_len - 1])
    top = np.minimum((win + 1) * max_len, count[src] - 1)  # from-end position of the window's oldest row
    col = top - from_end[src]

    first_of_user = np.ones(len(user), bool)
    first_of_user[1:] = user[1:] != user[:-1]
    per_user_windows = np.where(first_of_user, n_windows, 0)
    offset = np.cumsum(per_user_windows) - per_user_windows  # first row of each user's windows
    user_offset = np.maximum.accumulate(np.where(first_of_user, offset, 0))
    row = user_offset[src] + win
    n_rows = int(per_user_windows.sum())
    arrays = _assemble(per, src, row, col, n_rows, max_len + 1)
    row_users = np.zeros(n_rows, np.int64)
    row_users[row] = user[src]
    likes, ratings = arrays.pop("likes"), arrays.pop("ratings")
    sequences = _sequences(arrays, row_users, profile_codes(data.users, vocab))
    return TrainingRows(sequences, torch.from_numpy(likes), torch.from_numpy(ratings))


def history_sequences(data: SplitData, vocab: Vocab, stage: str, max_len: int) -> Sequences:
    """One row per user (row = user_idx): the latest `max_len` interactions before the `stage` target."""
    frame = data.history(stage)
    per = interaction_codes(frame, vocab)
    user = frame["user_idx"].to_numpy(np.int64)
    from_end, count = _positions(user)
    src = np.flatnonzero(from_end < max_len)
    col = np.minimum(count[src], max_len) - 1 - from_end[src]
    arrays = _assemble(per, src, user[src], col, data.n_users, max_len)
    return _sequences(arrays, np.arange(data.n_users, dtype=np.int64), profile_codes(data.users, vocab))
