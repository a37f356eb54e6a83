"""A new window of interactions as the continual loop sees it: a grown catalog and held-out targets.

The catalog only ever grows: the champion's items keep their rows (so its ID embeddings stay where
they are) and items first seen since are appended after them. Users work the same way. The new
window's latest interactions (a share, by time) are held out as the gate's targets (`test`, scored
prequentially); of the earlier ones each user's last validates (`valid`) and the rest join the
history (`train`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from components.data.dataset import SplitData


def grow_ids(known: list[str] | pd.Index, seen: pd.Series) -> pd.Index:
    """`known` in its order, then the ids of `seen` it lacks, in order of first appearance."""
    known = pd.Index(known, dtype=object)
    fresh = pd.Index(seen.astype(str).drop_duplicates(), dtype=object)
    return known.append(fresh[~fresh.isin(known)])


def grow_items(known: pd.DataFrame, catalog: pd.DataFrame | None, ids: pd.Index) -> pd.DataFrame:
    """Rows of `ids` in order: known items as they were, new ones described by `catalog` (or by id only)."""
    known = known.assign(item_id=known["item_id"].astype(str))
    new_ids = ids[len(known):]
    if catalog is not None:
        described = catalog.assign(item_id=catalog["item_id"].astype(str)).drop_duplicates("item_id")
        new = described.set_index("item_id").reindex(new_ids).rename_axis("item_id").reset_index()
    else:
        new = pd.DataFrame({"item_id": new_ids})
    new = new.assign(item_id=new_ids.to_numpy())
    for column in ("title", "text"):
        if column in known:
            new[column] = new[column].fillna("").astype(str) if column in new else ""
    if "categories" in known:
        cats = new["categories"] if "categories" in new else pd.Series([None] * len(new))
        new["categories"] = [list(c) if c is not None and not isinstance(c, float) else [] for c in cats]
    if "domain" in known:
        fill = known["domain"].iloc[0] if len(known) else "default"
        new["domain"] = new["domain"].fillna(fill) if "domain" in new else fill
    new["cold"] = False
    out = pd.concat([known, new[[c for c in known.columns if c in new]]], ignore_index=True)
    return out.assign(cold=out["cold"].fillna(False).astype(bool)) if "cold" in out else out


def holdout_split(items: pd.DataFrame, history: pd.DataFrame, window: pd.DataFrame,
                  users: pd.DataFrame | None = None, holdout_share: float = 0.2) -> SplitData:
    """History plus `window` as a split whose `test` is the window's latest `holdout_share` of interactions.

    The cut is in time, not per user, so that nothing trained on comes after a target (interactions
    of one second stay on one side); `holdout_share=1` holds out the whole window. Of the earlier
    window interactions each user's last is `valid`, the rest is `train` with `history`.
    `items` must hold every item of `history` and `window` (see `grow_items`); users are `users`
    (their order kept) followed by the new ones.
    """
    if not 0 < holdout_share <= 1:
        raise ValueError(f"holdout_share must be in (0, 1], got {holdout_share}")
    window = window.assign(user_id=window["user_id"].astype(str), item_id=window["item_id"].astype(str))
    history = history.assign(user_id=history["user_id"].astype(str), item_id=history["item_id"].astype(str))
    known_users = [] if users is None else users["user_id"].astype(str).tolist()
    user_ids = grow_ids(known_users, pd.concat([history["user_id"], window["user_id"]]))
    user_table = (users.assign(user_id=users["user_id"].astype(str)).set_index("user_id").reindex(user_ids)
                  .rename_axis("user_id").reset_index() if users is not None else pd.DataFrame({"user_id": user_ids}))
    ts = window["timestamp"].to_numpy(np.int64)
    held = ts >= np.sort(ts)[-math.ceil(holdout_share * len(ts))] if len(ts) else np.zeros(0, bool)
    early = window[~held].sort_values(["user_id", "timestamp"], kind="stable")
    last = early.groupby("user_id").cumcount(ascending=False).to_numpy() == 0
    parts = [c for c in window.columns if c != "split"]
    return SplitData.from_frames(items, user_table,
                                 pd.concat([history[[c for c in parts if c in history]], early[~last][parts]],
                                           ignore_index=True),
                                 early[last][parts], window[held][parts])


def leave_last_out(items: pd.DataFrame, interactions: pd.DataFrame, min_interactions: int = 3) -> SplitData:
    """Leave-one-out by time over `interactions` (users with fewer than `min_interactions` only train)."""
    frame = interactions.assign(user_id=interactions["user_id"].astype(str),
                                item_id=interactions["item_id"].astype(str))
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    from_end = frame.groupby("user_id").cumcount(ascending=False).to_numpy()
    counts = frame.groupby("user_id")["item_id"].transform("size").to_numpy()
    eligible = counts >= min_interactions
    users = pd.DataFrame({"user_id": frame["user_id"].drop_duplicates().to_numpy()})
    return SplitData.from_frames(items, users, frame[~eligible | (from_end >= 2)],
                                 frame[eligible & (from_end == 1)], frame[eligible & (from_end == 0)])


def on_catalog(data: SplitData, items: pd.DataFrame, users: pd.DataFrame | None = None) -> SplitData:
    """`data`'s interactions re-indexed on a (grown) catalog, e.g. the guard set for a grown model."""
    drop = ["user_idx", "item_idx"]
    user_table = users if users is not None else data.users
    return SplitData.from_frames(items, user_table, *(getattr(data, p).drop(columns=drop) for p in
                                                      ("train", "valid", "test")))


def sample_users(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """A seeded sample of at most `limit` of `users` (all of them when limit is None or larger)."""
    users = np.unique(users)
    if limit is None or len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))
