"""The feedback log's PostgreSQL store: the SQLite table's columns and promise, shared by several replicas.

Chosen by a `postgresql://` URL in `serve.feedback_store`; `components/serving/feedback.py` holds the
writer (one thread per process, group commit) and calls this module for the SQL. Durability: every
session sets `synchronous_commit = on`, so a commit returns once its WAL is flushed; `append`
acknowledges only after that commit, as with SQLite's synchronous=FULL.

Row ids grow in commit order across every writer: each commit takes a self-conflicting table lock
before its rows draw their ids (readers are not blocked). A follower reading "ids after the last one
I saw" (fresh state, `FeedbackReader`) then never skips a row committed later with a smaller id.
"""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

# A fixed key: replicas starting together create the table once.
_SCHEMA_LOCK = 7_410_221
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT,
    user_id TEXT,
    item_id TEXT NOT NULL,
    rank INTEGER,
    score DOUBLE PRECISION,
    like_prob DOUBLE PRECISION,
    timestamp BIGINT NOT NULL,
    event TEXT NOT NULL,
    value DOUBLE PRECISION,
    domain TEXT,
    source TEXT NOT NULL,
    model_version TEXT,
    logged_at DOUBLE PRECISION NOT NULL,
    propensity DOUBLE PRECISION
)"""
# Rotation and "events since the bundle was built" select by logging time.
INDEX = "CREATE INDEX IF NOT EXISTS feedback_logged_at ON feedback (logged_at)"
# feedback.FEEDBACK_COLUMNS, in its order.
_COLUMNS = ("request_id, user_id, item_id, rank, score, like_prob, timestamp, event, value, domain, source, "
            "model_version, propensity")
# Rows come as one JSON array of arrays in FEEDBACK_COLUMNS order (+ logged_at), as for SQLite: one
# statement per commit. WITH ORDINALITY keeps their order, so ids follow submission order.
INSERT = f"""INSERT INTO feedback ({_COLUMNS}, logged_at)
SELECT r->>0, r->>1, r->>2, (r->>3)::integer, (r->>4)::float8, (r->>5)::float8, (r->>6)::numeric::bigint, r->>7,
       (r->>8)::float8, r->>9, r->>10, r->>11, (r->>12)::float8, (r->>13)::float8
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, n) ORDER BY n"""
# Served answers: [timestamp, domain, logged_at, <the answer as served>], one impression row per item of
# the answer's "items" (as for SQLite, feedback.py).
INSERT_SERVED = f"""INSERT INTO feedback ({_COLUMNS}, logged_at)
SELECT a->3->>'request_id', a->3->>'user_id', i->>'item_id', (i->>'rank')::integer, (i->>'score')::float8,
       (i->>'like_prob')::float8, (a->>0)::numeric::bigint, 'impression', 1.0, a->>1, 'server',
       a->3->>'model_version', (i->>'propensity')::float8, (a->>2)::float8
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS s(a, n),
     jsonb_array_elements(a->3->'items') WITH ORDINALITY AS t(i, m)
ORDER BY n, m"""
# A table created before the propensity column gets it (null in its older rows).
ADD_PROPENSITY = "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS propensity DOUBLE PRECISION"
# SHARE ROW EXCLUSIVE conflicts with itself (one committing writer at a time) but not with reads.
LOCK = "LOCK TABLE feedback IN SHARE ROW EXCLUSIVE MODE"


def is_postgres(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, create: bool = True, timeout: float = 10.0) -> psycopg.Connection:
    """An autocommit session with synchronous commits; creates the table (once, under a lock) if asked."""
    # Imported here: the SQLite default (and the MLflow model, which imports serving) needs no driver.
    import psycopg

    conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
    try:
        conn.execute("SET synchronous_commit = on")
        if create:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(SCHEMA)
                conn.execute(INDEX)
                add_propensity(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def add_propensity(conn: psycopg.Connection) -> None:
    """Add the propensity column to an existing feedback table that lacks it (checked first: the ALTER
    takes an exclusive lock even when the column is there)."""
    columns = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'feedback'").fetchall()}
    if columns and "propensity" not in columns:
        conn.execute(ADD_PROPENSITY)


def commit(conn: psycopg.Connection, rows: str | None, served: str | None) -> None:
    """One transaction: the rows (a JSON array) and the served answers (a JSON array)."""
    with conn.transaction():
        conn.execute(LOCK)
        if rows:
            conn.execute(INSERT, (rows,))
        if served:
            conn.execute(INSERT_SERVED, (served,))
