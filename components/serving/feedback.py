"""The feedback log: served recommendations and user feedback, durably appended to one store.

The store is a SQLite file (`serve.feedback_log`, the embedded default) or, for several replicas, a
PostgreSQL database (`serve.feedback_store: postgresql://...`, components/serving/feedback_postgres.py):
the same table, the same promise.

Monitoring (prediction drift) and continual training read it with `read_feedback`. One row per
(request, item, event):
  request_id, user_id, item_id, rank, score, like_prob, timestamp, event, value, domain, source,
  model_version, propensity
`source` is "server" for what `recommend` served (event "impression", with rank/score/like_prob and
the propensity with which serve.exploration showed the item at that rank; null in logs written before
the column existed, which `open_sqlite` and the PostgreSQL store add to an existing table)
and "client" for events posted to `feedback` (impression, click, like, dislike, rating, purchase...).

Durability: SQLite runs a WAL journal with synchronous=FULL, PostgreSQL synchronous commits, so a
committed transaction survives a killed process and a power cut. A single writer thread commits whatever is queued in one transaction
(group commit): one fsync serves many concurrent requests. `append` (or the future of `submit`)
returns only after the commit, which is what lets the feedback endpoint acknowledge an event.
Served impressions are queued untracked: logging never slows a recommendation down, and they
wait up to `linger` seconds to share a commit (at most that much of them is lost in a crash).
Each answer is queued as the JSON the client got, and SQLite makes its rows in the writer thread:
building ten row dicts per answer cost the event loop 5x more (docs/benchmarks.md).
A store that cannot write (read-only file, full disk, database down) fails the waiting futures with
`FeedbackStoreUnavailable`: nothing is acknowledged, and the next commit tries again.
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from components.config import ServeConfig
from components.data.schema import INTERACTION_COLUMNS
from components.errors import RecloopError
from components.serving import feedback_postgres as pg
from components.serving.schemas import RecommendResponse

if TYPE_CHECKING:
    import psycopg

FEEDBACK_COLUMNS = ["request_id", "user_id", "item_id", "rank", "score", "like_prob", "timestamp", "event",
                    "value", "domain", "source", "model_version", "propensity"]
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
    logged_at REAL NOT NULL,
    propensity REAL
)"""
# A whole batch is one JSON array of rows bound to one statement: SQLite runs it in one call, so the
# writer thread lets go of the GIL once per commit instead of once per row (with the server's event
# loop busy, every GIL hand-over can cost a 5 ms switch interval).
_INSERT = (f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, logged_at) SELECT "
           + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(FEEDBACK_COLUMNS) + 1))
           + " FROM json_each(?)")
# Served answers: one JSON array of [timestamp, domain, logged_at, <the answer as served>], one impression row
# per item of the answer's "items". The answer is the JSON the client got, so the event loop serialises it
# once (writing floats in Python took it 30 us per answer); SQLite picks the fields out in the writer thread,
# without the GIL. MATERIALIZED: each answer's fields are extracted once, not once per item.
_INSERT_SERVED = f"""WITH a AS MATERIALIZED (
    SELECT json_extract(value, '$[3].request_id') AS request_id, json_extract(value, '$[3].user_id') AS user_id,
           json_extract(value, '$[3].model_version') AS model_version, json_extract(value, '$[0]') AS timestamp,
           json_extract(value, '$[1]') AS domain, json_extract(value, '$[2]') AS logged_at,
           json_extract(value, '$[3].items') AS items
    FROM json_each(?))
INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}, logged_at)
SELECT a.request_id, a.user_id, json_extract(i.value, '$.item_id'), json_extract(i.value, '$.rank'),
       json_extract(i.value, '$.score'), json_extract(i.value, '$.like_prob'), a.timestamp, 'impression', 1.0, a.domain,
       'server', a.model_version, json_extract(i.value, '$.propensity'), a.logged_at
FROM a, json_each(a.items) AS i"""
# Events that say the user liked the item, for turning the log into training interactions.
POSITIVE_EVENTS = ("click", "like", "purchase", "add_to_cart")


def _unavailable(error: BaseException) -> bool:
    """A store that cannot write or read now (read-only, full, locked, unreachable), not a row it refuses."""
    if isinstance(error, (sqlite3.OperationalError, OSError)):
        return True
    psycopg = sys.modules.get("psycopg")  # imported only where a PostgreSQL store is in use
    return psycopg is not None and isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


class FeedbackStoreUnavailable(RecloopError):
    """The feedback store could not commit (read-only file, full disk, database down): nothing was
    acknowledged. The service answers 503; a later attempt may succeed."""


def store_location(serve: ServeConfig) -> Path | str:
    """Where the service's feedback goes: `serve.feedback_store` (a postgresql:// URL) when set, else the
    SQLite file `serve.feedback_log`."""
    return serve.feedback_store or serve.feedback_log


def open_sqlite(path: Path) -> sqlite3.Connection:
    """An autocommit connection to the SQLite log (WAL, synchronous=FULL), the table created if new."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged event is on disk.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    _add_propensity(conn)
    return conn


def _add_propensity(conn: sqlite3.Connection) -> None:
    """Give a log created before the propensity column that column (null in its older rows)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(feedback)")}
    if columns and "propensity" not in columns:
        conn.execute("ALTER TABLE feedback ADD COLUMN propensity REAL")


class _SqliteStore:
    """One file; a failed commit drops the connection and the next commit opens the file again: a
    connection SQLite opened read-only (a file it could not write) stays read-only, and one that hit
    an I/O error (a full disk) is best not trusted."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, str(path)

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open_sqlite(self.path)

    def commit(self, conn: sqlite3.Connection, rows: str | None, served: str | None) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if rows:
                conn.execute(_INSERT, (rows,))
            if served:
                conn.execute(_INSERT_SERVED, (served,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite has rolled back already (e.g. after an I/O error)
                    pass
            raise

    def after_failure(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        conn.close()
        return None


class _PostgresStore:
    """A database URL; a failed commit drops the session, the next commit connects again."""

    def __init__(self, url: str) -> None:
        self.url, self.name = url, pg.redacted(url)

    def connect(self) -> psycopg.Connection:
        return pg.connect(self.url)

    def commit(self, conn: psycopg.Connection, rows: str | None, served: str | None) -> None:
        pg.commit(conn, rows, served)

    def after_failure(self, conn: psycopg.Connection) -> psycopg.Connection | None:
        conn.close()
        return None


def _store(location: Path | str) -> _SqliteStore | _PostgresStore:
    return _PostgresStore(location) if pg.is_postgres(location) else _SqliteStore(Path(location))


class FeedbackLog:
    """Append-only event log with one writer thread; `open()` starts it, `close()` drains and stops it."""

    def __init__(self, path: Path | str, max_batch: int = 5000, linger: float = 0.2):
        """`path`: the SQLite file, or a postgresql:// URL."""
        self._store = _store(path)
        self.path = path if pg.is_postgres(path) else Path(path)
        self.max_batch = max_batch
        self.linger = linger
        # (rows as a JSON fragment, row count, future), and served answers as JSON. Deques, not a
        # queue.Queue: appending wakes no one, so a served answer costs the event loop no thread hand-over.
        self._pending: deque[tuple[str, int, Future]] = deque()
        self._served: deque[str] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.commits = 0  # successful commits so far (lets this process's fresh-event readers skip a look)

    def open(self) -> FeedbackLog:
        try:
            conn = self._store.connect()  # fail here, at startup, if the store cannot be opened
        except Exception as e:
            if not _unavailable(e):
                raise
            raise FeedbackStoreUnavailable(f"the feedback store {self._store.name} cannot be opened for "
                                           f"writing: {e}") from e
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

    def submit_served(self, answer: RecommendResponse, timestamp: int, domain: str | None,
                      body: str | None = None) -> None:
        """Queue the impressions of a served `recommend` answer, untracked: committed in the writer's
        next round (`linger` s). `body`: the answer's JSON when the caller has it already."""
        if self._thread is None:
            raise RuntimeError("FeedbackLog.submit_served called before open()")
        body = answer.model_dump_json() if body is None else body
        self._served.append(f"[{timestamp},{json.dumps(domain)},{time.time()!r},{body}]")

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

    def _write_loop(self, conn) -> None:
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
                conn = self._commit(conn, batch, served)
            if stopping:
                break
        if conn is not None:
            conn.close()

    def _commit(self, conn, batch: list[tuple[str, int, Future]], served: list[str]):
        """Commit one group; returns the connection to use next (None: connect again)."""
        rows = "[" + ",".join(fragment for fragment, _, _ in batch) + "]" if batch else None
        try:
            if conn is None:
                conn = self._store.connect()
            self._store.commit(conn, rows, "[" + ",".join(served) + "]" if served else None)
        except Exception as e:  # fail the waiting requests, keep serving
            if conn is not None:
                conn = self._store.after_failure(conn)
            if _unavailable(e):
                error = FeedbackStoreUnavailable(f"the feedback store {self._store.name} could not commit: {e}")
                error.__cause__ = e
                e = error
            for _, _, done in batch:
                done.set_exception(e)
            return conn
        self.commits += 1
        for _, _, done in batch:
            done.set_result(None)
        return conn


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

    `path`: the SQLite file or a postgresql:// URL. Types: ids and text as str (user_id/request_id may
    be None), rank as nullable Int64, score/like_prob/value/propensity as float (propensity NaN where not
    logged), timestamp as int64 seconds.
    Safe while the server writes.
    """
    sql = f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback"
    if pg.is_postgres(path):
        rows = _read_postgres(path, sql + (" WHERE timestamp >= %s" if since is not None else "") + " ORDER BY id",
                              () if since is None else (int(since),))
        frame = pd.DataFrame(rows, columns=FEEDBACK_COLUMNS)
    else:
        path = Path(path)
        if not path.exists():
            raise RecloopError(f"feedback log {path} does not exist: start the service (it creates the log) "
                               "or point serve.feedback_log at the right file")
        # Not mode=ro: after a crash the first reader must replay the WAL index, which needs write access.
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            _add_propensity(conn)
            args: tuple = ()
            if since is not None:
                sql += " WHERE timestamp >= ?"
                args = (int(since),)
            frame = pd.read_sql_query(sql + " ORDER BY id", conn, params=args)
        finally:
            conn.close()
    return frame.astype({"rank": "Int64", "score": "float64", "like_prob": "float64", "propensity": "float64",
                         "timestamp": "int64", "value": "float64", "item_id": str, "event": str, "source": str})


def _read_postgres(url: str, sql: str, args: tuple) -> list[tuple]:
    import psycopg

    try:
        with pg.connect(url, create=False) as conn:
            pg.add_propensity(conn)
            return conn.execute(sql, args).fetchall()
    except psycopg.errors.UndefinedTable:
        raise RecloopError(f"feedback store {pg.redacted(url)} holds no feedback table: start the service "
                           "(it creates the table) or point serve.feedback_store at the right database") from None
    except psycopg.Error as e:
        raise RecloopError(f"feedback store {pg.redacted(url)} cannot be read: {e}") from None


_NEVER = object()


class FeedbackReader:
    """Follows the feedback table of either store by row id (fresh state): `changed()` is a cheap
    look (SQLite's data_version, PostgreSQL's highest id), `client_events()` the rows after a watermark.

    Row ids grow in commit order in both stores (SQLite has one writer at a time; PostgreSQL writers
    take a table lock to commit), so reading "after the highest id seen" never skips a row. A store
    that cannot be read raises FeedbackStoreUnavailable; the next call connects again.
    """

    def __init__(self, location: Path | str) -> None:
        self.location = location
        self._postgres = pg.is_postgres(location)
        self._conn = None
        self._seen: object = _NEVER  # data_version (SQLite) or highest id (PostgreSQL) at the last look

    def open(self) -> FeedbackReader:
        self._connection()
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def changed(self) -> bool:
        """Whether anything may have been committed since the last call (True on the first)."""
        probe = "SELECT max(id) FROM feedback" if self._postgres else "PRAGMA data_version"
        now = self._run(lambda conn: conn.execute(probe).fetchone()[0])
        changed, self._seen = now != self._seen, now
        return changed

    def client_events(self, after_id: int, events: tuple[str, ...], logged_since: float | None = None
                      ) -> tuple[list[tuple], int]:
        """Client events with a user, of the kinds `events`, with id > `after_id` (and logged at or after
        `logged_since`), in id order, as (id, user_id, item_id, timestamp, event, value, domain); and the
        highest id in the table, both from one snapshot (the next watermark)."""
        mark = "%s" if self._postgres else "?"
        where = (f"f.id > {mark} AND f.source = 'client' AND f.user_id IS NOT NULL "
                 f"AND f.event IN ({', '.join([mark] * len(events))})"
                 + (f" AND f.logged_at >= {mark}" if logged_since is not None else ""))
        columns = "f.id, f.user_id, f.item_id, f.timestamp, f.event, f.value, f.domain"
        args = (after_id, *events, *(() if logged_since is None else (logged_since,)))

        def read(conn) -> tuple[list[tuple], int]:
            if self._postgres:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    rows = conn.execute(f"SELECT {columns} FROM feedback AS f WHERE {where} ORDER BY f.id",
                                        args).fetchall()
                    top = conn.execute("SELECT max(id) FROM feedback").fetchone()[0]
                return rows, max(after_id, top or 0)
            # One statement is one snapshot: the highest id beside the rows (a row of nulls when none is new),
            # one call instead of a transaction of four (this runs on the event loop at every new commit).
            found = conn.execute(f"SELECT top.id, {columns} FROM (SELECT max(id) AS id FROM feedback) AS top "
                                 f"LEFT JOIN feedback AS f ON {where} ORDER BY f.id", args).fetchall()
            return [row[1:] for row in found if row[1] is not None], max(after_id, found[0][0] or 0)

        return self._run(read)

    def _connection(self):
        if self._conn is None:
            if self._postgres:
                self._conn = pg.connect(self.location)
            else:
                path = Path(self.location)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = open_sqlite(path)
        return self._conn

    def _run(self, work):
        try:
            return work(self._connection())
        except Exception as e:
            if not _unavailable(e):
                raise
            if self._postgres:
                self.close()
            name = pg.redacted(self.location) if self._postgres else self.location
            raise FeedbackStoreUnavailable(f"the feedback store {name} cannot be read: {e}") from e


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
