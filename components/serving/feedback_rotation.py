"""Retention of the feedback log: rows logged more than `serve.feedback_keep_days` ago leave the store
for Parquet files in `serve.feedback_archive`, so the store does not grow forever (`recloop feedback-rotate`).

Either store (SQLite or PostgreSQL). The old rows are read in id order, a chunk at a time; each chunk
is written whole to `feedback-<first id>-<last id>.parquet` (atomically, with `id` and `logged_at`
beside FEEDBACK_COLUMNS), and only then deleted from the store in one transaction, by the same
condition and up to its last id. A crash between the two leaves the rows in the store and in a file:
the next rotation archives them again, so a row is never lost, and readers of the archive drop
repeated ids. SQLite reuses the freed pages (the file stops growing; `VACUUM` would shrink it).
Fresh-state readers are unaffected: ids are never reused, and rotation only takes rows older than
any bundle worth serving should be (keep `feedback_keep_days` above the retraining interval).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.atomic import replaced
from components.config import ServeConfig
from components.errors import RecloopError
from components.serving import feedback_postgres as pg
from components.serving.feedback import FEEDBACK_COLUMNS, open_sqlite, store_location

ARCHIVE_COLUMNS = ["id", *FEEDBACK_COLUMNS, "logged_at"]
_TYPES = {"id": "int64", "rank": "Int64", "score": "float64", "like_prob": "float64", "propensity": "float64",
          "timestamp": "int64", "value": "float64", "logged_at": "float64"}


@dataclass
class Rotation:
    store: str
    cutoff: float
    archived: int = 0
    files: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.cutoff))
        if not self.archived:
            return f"feedback store {self.store}: nothing logged before {when}"
        return (f"feedback store {self.store}: {self.archived:,} rows logged before {when} moved to "
                f"{len(self.files)} Parquet file(s): {', '.join(str(f) for f in self.files)}")


def rotate_feedback(serve: ServeConfig, now: float | None = None, chunk_rows: int = 500_000) -> Rotation:
    """Move the rows of the service's feedback store logged more than `serve.feedback_keep_days` before
    `now` (default: the clock) to `serve.feedback_archive`."""
    if serve.feedback_keep_days is None:
        raise RecloopError("serve.feedback_keep_days is null (keep everything): set it to rotate the feedback log")
    location = store_location(serve)
    cutoff = (time.time() if now is None else now) - serve.feedback_keep_days * 86_400
    postgres = pg.is_postgres(location)
    if not postgres and not Path(location).exists():
        raise RecloopError(f"feedback log {location} does not exist")
    conn = pg.connect(location) if postgres else open_sqlite(Path(location))
    rotation = Rotation(pg.redacted(location) if postgres else str(location), cutoff)
    mark = "%s" if postgres else "?"
    select = (f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM feedback WHERE logged_at < {mark} AND id > {mark} "
              f"ORDER BY id LIMIT {int(chunk_rows)}")
    delete = f"DELETE FROM feedback WHERE logged_at < {mark} AND id <= {mark}"
    try:
        last = 0
        while rows := conn.execute(select, (cutoff, last)).fetchall():
            chunk = pd.DataFrame(rows, columns=ARCHIVE_COLUMNS).astype(_TYPES)
            first, last = int(chunk["id"].iloc[0]), int(chunk["id"].iloc[-1])
            path = Path(serve.feedback_archive) / f"feedback-{first:012d}-{last:012d}.parquet"
            with replaced(path) as tmp:
                chunk.to_parquet(tmp, index=False)
            _delete(conn, delete, (cutoff, last), postgres)
            rotation.archived += len(chunk)
            rotation.files.append(path)
    finally:
        conn.close()
    return rotation


def _delete(conn, sql: str, args: tuple, postgres: bool) -> None:
    if postgres:
        with conn.transaction():
            conn.execute(sql, args)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sql, args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def read_archive(folder: Path) -> pd.DataFrame:
    """Every archived row (ARCHIVE_COLUMNS), each id once, in id order."""
    files = sorted(Path(folder).glob("feedback-*.parquet"))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=_TYPES.get(c, object)) for c in ARCHIVE_COLUMNS})
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates("id").sort_values("id").reset_index(drop=True)
