"""The feedback log: served recommendations and user feedback, durably appended to one SQLite file.

Monitoring (prediction drift) and continual training read it with `read_feedback`. One row per
(request, item, event):
  request_id, user_id, item_id, rank, score, like_prob, timestamp, event, value, domain, source,
  model_version
`source` is "server" for what `recommend` served (event "impression", with rank/score/like_prob)
and "client" for events posted to `feedback` (impression, click, like, dislike, rating, purchase...).

Durability: WAL journal with synchronous=FULL, so a committed transaction survives a killed
process and a power cut. A single writer thread commits whatever is queued in one transaction
(group commit): one fsync serves many concurrent requests. `append` (or the future of `submit`)
returns only after the commit, which is what lets the feedback endpoint acknowledge an event;
served impressions are queued untracked, so logging never slows a recommendation down.
"""
from __future__ import annotations

import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pandas as pd

from components.data.schema import INTERACTION_COLUMNS
from components.errors import RecloopError

FEEDBACK_COLUMNS = ["request_id", "user_id", "item_id", "rank", "score", "like_prob", "timestamp", "event",
                    "value", "domain", "source", "model_version"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT,
    user_id TEXT,
    item_id TEXT NOT NULL,
    rank INTEGER,
    score REAL,
    like_prob REAL,
    timestamp INTEGER NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    domain TEXT,
    source TEXT NOT NULL,
    model_version TEXT,
    logged_at REAL NOT NULL
)"""
_INSERT = (f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, logged_at) "
           f"VALUES ({', '.join('?' * (len(FEEDBACK_COLUMNS) + 1))})")
# Events that say the user liked the item, for turning the log into training interactions.
POSITIVE_EVENTS = ("click", "like", "purchase", "add_to_cart")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged event is on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


class FeedbackLog:
    """Append-only event log with one writer thread; `open()` starts it, `close()` drains and stops it."""

    def __init__(self, path: Path | str, max_batch: int = 5000):
        self.path = Path(path)
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[list[tuple], Future | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def open(self) -> "FeedbackLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)  # fail here, at startup, if the file cannot be opened
        self._thread = threading.Thread(target=self._write_loop, args=(conn,), name="feedback-log", daemon=True)
        self._thread.start()
        return self

    def submit(self, rows: list[dict], track: bool = True) -> Future | None:
        """Queue rows (dicts keyed by FEEDBACK_COLUMNS); the future resolves once they are committed."""
        if self._thread is None:
            raise RuntimeError("FeedbackLog.submit called before open()")
        now = time.time()
        done: Future | None = Future() if track else None
        self._queue.put(([tuple(row.get(c) for c in FEEDBACK_COLUMNS) + (now,) for row in rows], done))
        return done

    def append(self, rows: list[dict], timeout: float = 30.0) -> None:
        """Write rows and return only after they are durably committed."""
        self.submit(rows).result(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            pending = [first]
            # Group commit: everything queued meanwhile shares this transaction's fsync.
            while sum(len(v) for v, _ in pending) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                pending.append(item)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for values, _ in pending:
                    conn.executemany(_INSERT, values)
                conn.execute("COMMIT")
            except Exception as e:  # a full disk or a locked file: fail the waiting requests, keep serving
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for _, done in pending:
                    if done is not None:
                        done.set_exception(e)
                continue
            for _, done in pending:
                if done is not None:
                    done.set_result(None)
        conn.close()


def read_feedback(path: Path | str, since: float | None = None) -> pd.DataFrame:
    """The whole log (or rows with timestamp >= `since`) as a DataFrame with FEEDBACK_COLUMNS.

    Types: ids and text as str (user_id/request_id may be None), rank as nullable Int64,
    score/like_prob/value as float, timestamp as int64 seconds. Safe while the server writes.
    """
    path = Path(path)
    if not path.exists():
        raise RecloopError(f"feedback log {path} does not exist: start the service (it creates the log) "
                           "or point serve.feedback_log at the right file")
    # Not mode=ro: after a crash the first reader must replay the WAL index, which needs write access.
    conn = sqlite3.connect(path, timeout=30.0)
    try:
        sql = f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback"
        args: tuple = ()
        if since is not None:
            sql += " WHERE timestamp >= ?"
            args = (int(since),)
        frame = pd.read_sql_query(sql + " ORDER BY id", conn, params=args)
    finally:
        conn.close()
    return frame.astype({"rank": "Int64", "score": "float64", "like_prob": "float64", "timestamp": "int64",
                         "value": "float64", "item_id": str, "event": str, "source": str})


def feedback_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Client feedback as canonical interactions (for continual training): ratings keep their value,
    positive events count 1.0; impressions, dislikes and anonymous events are left out.
    """
    rows = frame[(frame["source"] == "client") & frame["user_id"].notna()]
    rated = rows["event"] == "rating"
    rows = rows[rated | rows["event"].isin(POSITIVE_EVENTS)]
    return pd.DataFrame({
        "user_id": rows["user_id"].astype(str),
        "item_id": rows["item_id"].astype(str),
        "timestamp": rows["timestamp"].astype("int64"),
        "event": rows["event"].where(rows["event"] != "rating", "rate").astype(str),
        "value": rows["value"].where(rows["event"] == "rating", 1.0).astype("float64"),
        "domain": rows["domain"].fillna("default").astype(str),
    })[INTERACTION_COLUMNS].reset_index(drop=True)
