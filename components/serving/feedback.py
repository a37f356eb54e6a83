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
returns only after the commit, which is what lets the feedback endpoint acknowledge an event.
Served impressions are queued untracked: logging never slows a recommendation down, and they
wait up to `linger` seconds to share a commit (at most that much of them is lost in a crash).
Each answer is queued as one compact JSON array and SQLite makes its rows in the writer thread:
building ten row dicts per answer cost the event loop 5x more (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import pandas as pd

from components.data.schema import INTERACTION_COLUMNS
from components.errors import RecloopError
from components.serving.schemas import RecommendResponse

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
# A whole batch is one JSON array of rows bound to one statement: SQLite runs it in one call, so the
# writer thread lets go of the GIL once per commit instead of once per row (with the server's event
# loop busy, every GIL hand-over can cost a 5 ms switch interval).
_INSERT = (f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, logged_at) SELECT "
           + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(FEEDBACK_COLUMNS) + 1))
           + " FROM json_each(?)")
# Served answers: one JSON array of [request_id, user_id, model_version, timestamp, domain, logged_at,
# [[item_id, rank, score, like_prob], ...]], one impression row per item. MATERIALIZED: each answer's
# fields are extracted once, not once per item (half the writer's time).
_INSERT_SERVED = f"""WITH a AS MATERIALIZED (
    SELECT json_extract(value, '$[0]') AS request_id, json_extract(value, '$[1]') AS user_id,
           json_extract(value, '$[2]') AS model_version, json_extract(value, '$[3]') AS timestamp,
           json_extract(value, '$[4]') AS domain, json_extract(value, '$[5]') AS logged_at,
           json_extract(value, '$[6]') AS items
    FROM json_each(?))
INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, logged_at)
SELECT a.request_id, a.user_id, json_extract(i.value, '$[0]'), json_extract(i.value, '$[1]'),
       json_extract(i.value, '$[2]'), json_extract(i.value, '$[3]'), a.timestamp, 'impression', 1.0, a.domain,
       'server', a.model_version, a.logged_at
FROM a, json_each(a.items) AS i"""
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

    def __init__(self, path: Path | str, max_batch: int = 5000, linger: float = 0.2):
        self.path = Path(path)
        self.max_batch = max_batch
        self.linger = linger
        # (rows as a JSON fragment, row count, future), and served answers as JSON. Deques, not a
        # queue.Queue: appending wakes no one, so a served answer costs the event loop no thread hand-over.
        self._pending: deque[tuple[str, int, Future]] = deque()
        self._served: deque[str] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def open(self) -> FeedbackLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)  # fail here, at startup, if the file cannot be opened
        self._stopping = False
        self._thread = threading.Thread(target=self._write_loop, args=(conn,), name="feedback-log", daemon=True)
        self._thread.start()
        return self

    def submit(self, rows: list[dict]) -> Future:
        """Queue rows (dicts keyed by FEEDBACK_COLUMNS) and wake the writer; the future resolves once
        they are committed."""
        if self._thread is None:
            raise RuntimeError("FeedbackLog.submit called before open()")
        done: Future = Future()
        if not rows:
            done.set_result(None)
            return done
        # Serialised here, by the caller: the writer thread then only joins strings, holding the GIL
        # for microseconds while the server's event loop wants it.
        self._pending.append((_json_rows(rows, time.time()), len(rows), done))
        self._wake.set()
        return done

    def submit_served(self, answer: RecommendResponse, timestamp: int, domain: str | None) -> None:
        """Queue the impressions of a served `recommend` answer, untracked: committed in the writer's
        next round (`linger` s)."""
        if self._thread is None:
            raise RuntimeError("FeedbackLog.submit_served called before open()")
        self._served.append(_json([answer.request_id, answer.user_id, answer.model_version, timestamp, domain,
                                   time.time(), [[i.item_id, i.rank, i.score, i.like_prob] for i in answer.items]]))

    def append(self, rows: list[dict], timeout: float = 30.0) -> None:
        """Write rows and return only after they are durably committed."""
        self.submit(rows).result(timeout)

    def close(self) -> None:
        """Write what is pending, then stop the writer."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            self._wake.wait(self.linger)
            self._wake.clear()
            stopping = self._stopping
            # Group commit: everything pending shares one transaction and one fsync.
            while self._pending or self._served:
                batch, rows = [], 0
                while self._pending and rows < self.max_batch:
                    batch.append(self._pending.popleft())
                    rows += batch[-1][1]
                served = [self._served.popleft() for _ in range(min(len(self._served), self.max_batch))]
                self._commit(conn, batch, served)
            if stopping:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[str, int, Future]],
                served: list[str]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if batch:
                conn.execute(_INSERT, ("[" + ",".join(fragment for fragment, _, _ in batch) + "]",))
            if served:
                conn.execute(_INSERT_SERVED, ("[" + ",".join(served) + "]",))
            conn.execute("COMMIT")
        except Exception as e:  # a full disk or a locked file: fail the waiting requests, keep serving
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, _, done in batch:
                done.set_exception(e)
            return
        for _, _, done in batch:
            done.set_result(None)


def _json_rows(rows: list[dict], now: float) -> str:
    """Rows as comma-separated JSON arrays in FEEDBACK_COLUMNS order (+ logged_at)."""
    return _json([[row.get(c) for c in FEEDBACK_COLUMNS] + [now] for row in rows])[1:-1]


def _json(value: list) -> str:
    """JSON with NaN and infinities as null (SQLite's JSON has neither)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value))


def _finite(value):
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


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
