"""The split tables, indexed for models and the evaluator.

Items and users get dense integer indices (`item_idx`, `user_idx`, both from 0) so that scores are
rows of a (users, items) matrix and histories are sparse matrices or ragged arrays, never Python
loops over interactions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from components.data.schema import ITEMS_FILE, USERS_FILE
from components.errors import RecloopError

PARTS = ("train", "valid", "test")


@dataclass
class SplitData:
    """train / valid / test interactions with `user_idx` and `item_idx` columns, plus the catalog.

    `items` row i describes item index i; its boolean column `cold` marks items held out of training.
    `users` row u describes user index u.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @classmethod
    def load(cls, split_dir: Path) -> "SplitData":
        split_dir = Path(split_dir)
        missing = [p for p in (*PARTS, "items", "users") if not (split_dir / f"{p}.parquet").exists()]
        if missing:
            raise RecloopError(f"{split_dir} lacks {', '.join(missing)}.parquet: run `recloop split` first")
        items = pd.read_parquet(split_dir / ITEMS_FILE).reset_index(drop=True)
        users = pd.read_parquet(split_dir / USERS_FILE).reset_index(drop=True)
        parts = {p: pd.read_parquet(split_dir / f"{p}.parquet") for p in PARTS}
        return cls.from_frames(items, users, **parts)

    @classmethod
    def from_frames(cls, items: pd.DataFrame, users: pd.DataFrame, train: pd.DataFrame,
                    valid: pd.DataFrame, test: pd.DataFrame) -> "SplitData":
        """Index canonical frames: item and user order follows `items` and `users`."""
        items = items.reset_index(drop=True)
        users = users.reset_index(drop=True)
        if "cold" not in items:
            items = items.assign(cold=False)
        item_index = pd.Index(items["item_id"])
        user_index = pd.Index(users["user_id"])
        indexed = []
        for name, part in (("train", train), ("valid", valid), ("test", test)):
            part = part.assign(item_idx=item_index.get_indexer(part["item_id"]),
                               user_idx=user_index.get_indexer(part["user_id"]))
            if (part["item_idx"] < 0).any() or (part["user_idx"] < 0).any():
                raise RecloopError(f"{name} refers to items or users missing from the catalog")
            indexed.append(part.sort_values(["user_idx", "timestamp"], kind="stable").reset_index(drop=True))
        return cls(items, users, *indexed)

    def history(self, stage: str) -> pd.DataFrame:
        """Interactions a user has before the `stage` target: train for valid; train + valid for test."""
        if stage == "valid":
            return self.train
        if stage == "test":
            both = pd.concat([self.train, self.valid], ignore_index=True)
            return both.sort_values(["user_idx", "timestamp"], kind="stable").reset_index(drop=True)
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")

    def targets(self, stage: str) -> pd.DataFrame:
        return {"valid": self.valid, "test": self.test}[stage]

    def seen_matrix(self, history: pd.DataFrame) -> sp.csr_matrix:
        """(users, items) 0/1 CSR of what each user has interacted with: filtered out of rankings."""
        data = np.ones(len(history), dtype=np.float32)
        m = sp.csr_matrix((data, (history["user_idx"].to_numpy(), history["item_idx"].to_numpy())),
                          shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item, (items,) int64."""
        return np.bincount(self.train["item_idx"].to_numpy(), minlength=self.n_items)
