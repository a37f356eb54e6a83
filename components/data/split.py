"""The split stage: validated tables -> train / valid / test (+ live windows), the contract `SplitData.load` reads.

Order of work: time cutoff (if set) -> k-core filtering -> each user's latest `max_history`
interactions -> cold-item holdout -> leave-one-out (or the source's own split).
Everything runs on integer codes with numpy (lexsort, bincount), never a Python loop over users,
so a few million interactions take seconds.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.atomic import staged_dir, write_json
from components.config import SplitConfig
from components.data.dataset import PARTS
from components.data.schema import INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE
from components.data.live_windows import Window, cutoff_seconds, write_windows
from components.errors import RecloopError

REPORT_FILE = "split.json"
LIVE_DIR = "live"
# Leave-one-out needs a training interaction, a validation target and a test target.
MIN_LOO_INTERACTIONS = 3
# Part codes: the index of each name in PARTS.
TRAIN, VALID, TEST = range(len(PARTS))


@dataclass
class SplitSummary:
    """What the split stage wrote: rows per part, catalog sizes, what each filter removed, live windows."""

    mode: str
    input_interactions: int
    train: int
    valid: int
    test: int
    users: int
    items: int
    cold_items: int
    # Users left with fewer than 3 interactions (their history was all cold items): no LOO possible.
    excluded_users: int
    kcore_passes: int
    kcore_dropped: int
    history_dropped: int
    cold_dropped: int
    live_interactions: int
    windows: int
    out_dir: str
    report: str

    def describe(self) -> str:
        lines = [
            f"split ({self.mode}): {self.input_interactions:,} interactions -> train {self.train:,} / "
            f"valid {self.valid:,} / test {self.test:,}",
            f"  {self.users:,} users ({self.excluded_users:,} excluded: fewer than {MIN_LOO_INTERACTIONS} "
            f"interactions left, so no train + valid + test)",
            f"  {self.items:,} items ({self.cold_items:,} cold: held out of training, kept as targets)",
            f"  k-core: {self.kcore_dropped:,} rows dropped in {self.kcore_passes} passes; "
            f"max_history dropped {self.history_dropped:,}; cold holdout dropped {self.cold_dropped:,}",
        ]
        if self.windows:
            lines.append(f"  live: {self.live_interactions:,} interactions in {self.windows} windows "
                         f"-> {self.out_dir}/{LIVE_DIR}")
        lines.append(f"  wrote {self.out_dir}; report {self.report}")
        return "\n".join(lines)


@dataclass
class Assignment:
    """The kept interactions in (user, time) order, their part (TRAIN/VALID/TEST) and what the filters removed."""

    rows: pd.DataFrame
    part: np.ndarray
    cold_items: np.ndarray
    excluded_users: int
    kcore_passes: int
    kcore_dropped: int
    history_dropped: int
    cold_dropped: int


def _read_inputs(in_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    files = (INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE)
    missing = [f for f in files if not (in_dir / f).exists()]
    if missing:
        raise RecloopError(f"{in_dir} lacks {', '.join(missing)}: run `recloop validate` first")
    interactions, items, users = (pd.read_parquet(in_dir / f) for f in files)
    absent = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions]
    if absent:
        raise RecloopError(f"{in_dir / INTERACTIONS_FILE} has no {', '.join(absent)} column: "
                           "it is not a canonical interactions table")
    return interactions, items, users


def kcore(user: np.ndarray, item: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray, int]:
    """Mask of the rows in the (min_user, min_item) k-core and how many passes removed rows.

    `user` and `item` are dense integer codes. Dropping rare items can push users below the
    threshold and back, so count and filter until nothing changes.
    """
    keep = np.ones(len(user), dtype=bool)
    n_users = int(user.max()) + 1 if len(user) else 0
    n_items = int(item.max()) + 1 if len(item) else 0
    passes = 0
    while True:
        per_user = np.bincount(user[keep], minlength=n_users)
        per_item = np.bincount(item[keep], minlength=n_items)
        now = keep & (per_user[user] >= min_user) & (per_item[item] >= min_item)
        if now.sum() == keep.sum():
            return keep, passes
        keep, passes = now, passes + 1


def _positions_from_end(user: np.ndarray) -> np.ndarray:
    """For rows sorted by user: 0 for each user's last row, 1 for the one before, and so on."""
    if not len(user):
        return np.zeros(0, dtype=np.int64)
    _, starts, counts = np.unique(user, return_index=True, return_counts=True)
    last = np.repeat(starts + counts - 1, counts)
    return last - np.arange(len(user))


def _given_parts(rows: pd.DataFrame, user: np.ndarray) -> np.ndarray:
    """The source's own `split` column as part codes, checked to be a leave-one-out by time."""
    if "split" not in rows:
        raise RecloopError("split.mode is 'given' but the interactions have no `split` column "
                           "(only sources that ship their own train/valid/test split have one): "
                           "use split.mode=loo")
    names = rows["split"].astype(str).to_numpy()
    unknown = sorted(set(np.unique(names)) - set(PARTS))
    if unknown:
        raise RecloopError(f"the `split` column holds {unknown}; expected only {list(PARTS)}")
    part = np.select([names == p for p in PARTS], [TRAIN, VALID, TEST]).astype(np.int8)
    n_users = int(user.max()) + 1 if len(user) else 0
    for code, name in ((VALID, "valid"), (TEST, "test")):
        if len(user) and np.bincount(user[part == code], minlength=n_users).max() > 1:
            raise RecloopError(f"the source's split gives some users more than one {name} interaction; "
                               "mode 'given' expects at most one each: use split.mode=loo")
    # A target must be no older than anything it is predicted from.
    ts = rows["timestamp"].to_numpy(dtype=np.int64)
    is_train, is_valid, is_test = part == TRAIN, part == VALID, part == TEST
    latest_train = np.full(n_users, np.iinfo(np.int64).min)
    np.maximum.at(latest_train, user[is_train], ts[is_train])
    latest_valid = latest_train.copy()
    np.maximum.at(latest_valid, user[is_valid], ts[is_valid])
    late = (is_valid & (ts < latest_train[user])) | (is_test & (ts < latest_valid[user]))
    if late.any():
        raise RecloopError(f"the source's split has {np.unique(user[late]).size} users whose valid or test "
                           "interaction is older than one they are predicted from: use split.mode=loo")
    return part


def _pick_cold(item: np.ndarray, item_ids: np.ndarray, part: np.ndarray, fraction: float,
               seed: int) -> np.ndarray:
    """Mask over item codes: a seeded `fraction` of the items, drawn among valid/test targets so
    that every cold item is evaluated. Candidates are taken in id order, so row order does not matter."""
    targets = np.unique(item[part != TRAIN])
    targets = targets[np.argsort(item_ids[targets], kind="stable")]
    n_cold = min(round(fraction * np.unique(item).size), targets.size)
    cold = np.zeros(len(item_ids), dtype=bool)
    cold[np.random.default_rng(seed).choice(targets, size=n_cold, replace=False)] = True
    return cold


def assign(rows: pd.DataFrame, cfg: SplitConfig, seed: int) -> Assignment:
    """Filter `rows` (k-core, max_history, cold holdout) and give each kept row its part."""
    rows = rows.reset_index(drop=True)
    user = pd.factorize(rows["user_id"])[0]
    item, item_ids = pd.factorize(rows["item_id"])
    item_ids = np.asarray(item_ids)
    ts = rows["timestamp"].to_numpy(dtype=np.int64)
    given = cfg.mode == "given"
    keys = [np.arange(len(rows)), ts, user]
    if given:
        source_part = _given_parts(rows, user)
        # A target sorts after the training rows that share its timestamp, so max_history keeps it.
        keys.insert(1, source_part)
    keep, passes = kcore(user, item, cfg.min_user_interactions, cfg.min_item_interactions)
    order = np.lexsort(keys)  # by user, then time, then original row order
    order = order[keep[order]]
    position = _positions_from_end(user[order])
    recent = position < cfg.max_history
    order, position = order[recent], position[recent]
    if given:
        part = source_part[order]
    else:
        part = np.select([position == 0, position == 1], [TEST, VALID], TRAIN).astype(np.int8)

    cold = _pick_cold(item[order], item_ids, part, cfg.cold_item_fraction, seed)
    dropped = (part == TRAIN) & cold[item[order]]
    order, part = order[~dropped], part[~dropped]

    excluded = 0
    if not given:
        # Holding cold items out can leave a user with targets but no history.
        per_user = np.bincount(user[order], minlength=int(user.max()) + 1 if len(user) else 0)
        short = per_user[user[order]] < MIN_LOO_INTERACTIONS
        excluded = int(((per_user > 0) & (per_user < MIN_LOO_INTERACTIONS)).sum())
        order, part = order[~short], part[~short]
    if not len(order):
        raise RecloopError(f"no interactions left to split after filtering {len(rows):,} "
                           "(k-core, max_history, cold holdout): lower split.min_user_interactions "
                           "or split.min_item_interactions, or move split.time.cutoff later")
    return Assignment(rows=rows.iloc[order].reset_index(drop=True), part=part, cold_items=item_ids[cold],
                      excluded_users=excluded, kcore_passes=passes, kcore_dropped=int((~keep).sum()),
                      history_dropped=int((~recent).sum()), cold_dropped=int(dropped.sum()))


def _catalog(table: pd.DataFrame, key: str, ids: pd.Index) -> pd.DataFrame:
    """Rows of `table` for `ids`, in the table's order; ids it lacks get a row holding only the key."""
    table = table.drop_duplicates(key)
    known = table[table[key].isin(ids)]
    lacking = ids[~ids.isin(table[key])]
    if not len(lacking):
        return known.reset_index(drop=True)
    return pd.concat([known, pd.DataFrame({key: lacking})], ignore_index=True)


def _items(items: pd.DataFrame, rows: pd.DataFrame, cold: np.ndarray) -> pd.DataFrame:
    """The catalog of every item in the split, with `cold` marking those held out of training."""
    out = _catalog(items, "item_id", pd.Index(rows["item_id"].unique()))
    # Items the catalog lacked still need text fields the item tower can read.
    for column in ("title", "text"):
        if column in out:
            out[column] = out[column].fillna("")
    if "categories" in out:
        out["categories"] = [c if isinstance(c, (list, np.ndarray)) else [] for c in out["categories"]]
    if "domain" in out and "domain" in rows:
        out["domain"] = out["domain"].fillna(out["item_id"].map(rows.drop_duplicates("item_id")
                                                                .set_index("item_id")["domain"]))
    return out.assign(cold=out["item_id"].isin(cold))


def _write_outputs(rows: pd.DataFrame, part: np.ndarray, items: pd.DataFrame, users: pd.DataFrame,
                   live: pd.DataFrame, cutoff: int | None, cfg: SplitConfig, out_dir: Path) -> list[Window]:
    """Write every file of the split into a temporary folder, then put it in place of `out_dir`."""
    windows = []
    with staged_dir(out_dir) as tmp:
        # One Arrow table filtered per part keeps the three files' schemas identical.
        table = pa.Table.from_pandas(rows, preserve_index=False)
        for code, name in enumerate(PARTS):
            pq.write_table(table.filter(pa.array(part == code)), tmp / f"{name}.parquet")
        pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp / ITEMS_FILE)
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), tmp / USERS_FILE)
        if cutoff is not None:
            windows = write_windows(live, cutoff, cfg.time.window_days, tmp / LIVE_DIR,
                                    pd.Index(users["user_id"]), pd.Index(items["item_id"]))
    return windows


def split(cfg: SplitConfig, in_dir: Path, out_dir: Path, report_dir: Path, seed: int) -> SplitSummary:
    """Split the validated tables in `in_dir` into train / valid / test (+ live windows) in `out_dir`.

    Writes train/valid/test/items/users.parquet (and live/window_NNN.parquet + live/windows.json when
    `cfg.time.cutoff` is set) atomically, and the counts to `report_dir/split.json`.
    """
    in_dir, out_dir, report_dir = Path(in_dir), Path(out_dir), Path(report_dir)
    cutoff = None if cfg.time.cutoff is None else cutoff_seconds(cfg.time.cutoff)
    with tqdm(total=3, desc="split", unit="step", file=sys.stderr, leave=False) as progress:
        interactions, items, users = _read_inputs(in_dir)
        past, live = interactions, interactions.iloc[:0]
        if cutoff is not None:
            before = interactions["timestamp"].to_numpy(dtype=np.int64) < cutoff
            past, live = interactions[before], interactions[~before]
            if not before.any():
                raise RecloopError(f"no interactions before split.time.cutoff {cfg.time.cutoff}: "
                                   "move the cutoff later, or set it to null")
        progress.update()
        result = assign(past, cfg, seed)
        progress.update()
        rows = result.rows if cfg.mode == "given" else result.rows.drop(columns="split", errors="ignore")
        item_table = _items(items, rows, result.cold_items)
        user_table = _catalog(users, "user_id", pd.Index(rows["user_id"].unique()))
        windows = _write_outputs(rows, result.part, item_table, user_table, live, cutoff, cfg, out_dir)
        progress.update()

    counts = {name: int((result.part == code).sum()) for code, name in enumerate(PARTS)}
    summary = SplitSummary(
        mode=cfg.mode, input_interactions=len(interactions), **counts,
        users=len(user_table), items=len(item_table), cold_items=int(item_table["cold"].sum()),
        excluded_users=result.excluded_users, kcore_passes=result.kcore_passes,
        kcore_dropped=result.kcore_dropped, history_dropped=result.history_dropped,
        cold_dropped=result.cold_dropped, live_interactions=sum(w.interactions for w in windows),
        windows=len(windows), out_dir=str(out_dir), report=str(report_dir / REPORT_FILE))
    # The metric file holds the counts only, which `dvc metrics diff` can compare.
    write_json(report_dir / REPORT_FILE, {k: v for k, v in asdict(summary).items() if isinstance(v, int)})
    return summary
