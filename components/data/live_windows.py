"""Live windows: interactions at or after a cutoff, cut into consecutive batches of `window_days`.

Window k holds the interactions with `cutoff + k * window_days <= timestamp < cutoff + (k + 1) * window_days`.
Rows are kept whole (new users and new items are what live windows are for). The time split writes
them as files (`write_windows`; empty windows in between too, so that a window's number always names
the same stretch of time); a replay of history reads them from memory (`Stream`).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.atomic import write_text

SECONDS_PER_DAY = 86_400
WINDOWS_FILE = "windows.json"


@dataclass
class Window:
    """One live batch: its file, the stretch of time it covers and what it holds."""

    index: int
    file: str
    start: str
    end: str
    start_ts: int
    end_ts: int
    interactions: int
    users: int
    items: int
    # Users and items the split's catalog does not know: the cold start the live model meets.
    new_users: int
    new_items: int


def cutoff_seconds(cutoff: date) -> int:
    """`split.time.cutoff` (a date, taken as midnight UTC) as epoch seconds."""
    return int(pd.Timestamp(cutoff).tz_localize("UTC").value // 1_000_000_000)


def _iso(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def write_windows(live: pd.DataFrame, cutoff: int, window_days: int, live_dir: Path,
                  known_users: pd.Index, known_items: pd.Index) -> list[Window]:
    """Write `live` (rows at/after `cutoff`) as `window_NNN.parquet` files plus `windows.json` into `live_dir`.

    `known_users` / `known_items` are the split's catalog, against which users and items count as new.
    """
    live_dir.mkdir(parents=True, exist_ok=True)
    width = window_days * SECONDS_PER_DAY
    ts = live["timestamp"].to_numpy(dtype=np.int64)
    window = (ts - cutoff) // width
    # Within a window rows stay in time order, ties in their original order, ready to be replayed.
    order = np.lexsort((np.arange(len(live)), ts, window))
    live = live.iloc[order].reset_index(drop=True)
    window = window[order]
    n_windows = int(window[-1]) + 1 if len(window) else 0
    bounds = np.searchsorted(window, np.arange(n_windows + 1))
    new_user = ~live["user_id"].isin(known_users).to_numpy()
    new_item = ~live["item_id"].isin(known_items).to_numpy()
    # One Arrow table sliced per window keeps every file's schema identical, empty windows included.
    table = pa.Table.from_pandas(live, preserve_index=False)
    windows = []
    for k in tqdm(range(n_windows), desc="live windows", unit="window", file=sys.stderr, leave=False):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        name = f"window_{k:03d}.parquet"
        pq.write_table(table.slice(lo, hi - lo), live_dir / name)
        users = live["user_id"].iloc[lo:hi]
        items = live["item_id"].iloc[lo:hi]
        start, end = cutoff + k * width, cutoff + (k + 1) * width
        windows.append(Window(
            index=k, file=name, start=_iso(start), end=_iso(end), start_ts=start, end_ts=end,
            interactions=hi - lo, users=users.nunique(), items=items.nunique(),
            new_users=users[new_user[lo:hi]].nunique(), new_items=items[new_item[lo:hi]].nunique()))
    manifest = {"cutoff": _iso(cutoff), "window_days": window_days, "windows": [asdict(w) for w in windows]}
    write_text(live_dir / WINDOWS_FILE, json.dumps(manifest, indent=2) + "\n")
    return windows


@dataclass
class Stream:
    """Interactions cut at `cutoff`; the later ones as consecutive windows of `window_days`."""

    interactions: pd.DataFrame
    cutoff: int
    window_days: int

    @property
    def past(self) -> pd.DataFrame:
        return self.interactions[self.interactions["timestamp"] < self.cutoff]

    def windows(self, limit: int | None = None) -> Iterator[tuple[int, int, int, pd.DataFrame]]:
        """(index, start, end, rows) of each non-empty window after the cutoff, in time order."""
        ts = self.interactions["timestamp"].to_numpy(np.int64)
        width = self.window_days * SECONDS_PER_DAY
        last = int(ts.max()) if len(ts) else self.cutoff
        count = 0
        for k in range(max(0, (last - self.cutoff) // width + 1)):
            start, end = self.cutoff + k * width, self.cutoff + (k + 1) * width
            rows = self.interactions[(ts >= start) & (ts < end)]
            if len(rows) and (limit is None or count < limit):
                count += 1
                yield k, start, end, rows
