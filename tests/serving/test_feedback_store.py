"""The feedback store on both backends (SQLite file, a real PostgreSQL server started here): the same
rows back, acknowledged rows survive kill -9 of the writer, an unwritable store fails the append with
FeedbackStoreUnavailable (what /feedback turns into a 503), followers read commits in order, and
rotation moves old rows to Parquet."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from click.testing import CliRunner

from components.cli import cli
from components.config import ServeConfig
from components.monitoring.feedback import read_feedback_log
from components.serving.feedback import (
    FEEDBACK_COLUMNS,
    FeedbackLog,
    FeedbackReader,
    FeedbackStoreUnavailable,
    feedback_interactions,
    read_feedback,
    store_location,
)
from components.serving.feedback_rotation import read_archive, rotate_feedback
from components.serving.schemas import RecommendedItem, RecommendResponse

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ("click", "like", "purchase", "add_to_cart", "rating")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return tmp_path / "feedback.db"
    return request.getfixturevalue("postgres").create_database()


def click(n: int, user: str = "u1", event: str = "click", value: float = 1.0) -> dict:
    return {"request_id": f"r{n}", "user_id": user, "item_id": str(n), "timestamp": 1_000 + n, "event": event,
            "value": value, "domain": "movies", "source": "client", "model_version": "1"}


def answer() -> RecommendResponse:
    return RecommendResponse(request_id="served", user_id="u1", strategy="history", known_user=True, history_used=3,
                             unknown_items=[], model_version="2",
                             items=[RecommendedItem(item_id="9", title="Nine", rank=1, score=0.5, like_prob=0.25),
                                    RecommendedItem(item_id="7", title="Seven", rank=2, score=-0.125)])


def test_both_stores_give_back_the_same_log(tmp_path, postgres):
    frames = []
    for where in (tmp_path / "f.db", postgres.create_database()):
        log = FeedbackLog(where).open()
        log.append([click(1), click(2, event="rating", value=4.5), {**click(3), "user_id": None, "rank": 2,
                                                                     "score": float("nan")}])
        log.submit_served(answer(), 1_010, "movies")
        log.close()
        frames.append(read_feedback(where))
        assert read_feedback(where, since=1_004)["timestamp"].tolist() == [1_010, 1_010]
    sqlite, postgresql = frames
    assert list(postgresql.columns) == FEEDBACK_COLUMNS and len(postgresql) == 5
    pd.testing.assert_frame_equal(sqlite, postgresql)
    # Monitoring and retraining read through the same function, so either store.
    pd.testing.assert_frame_equal(read_feedback_log(tmp_path / "f.db"), read_feedback_log(where))
    pd.testing.assert_frame_equal(feedback_interactions(sqlite), feedback_interactions(postgresql))
    served = postgresql[postgresql["source"] == "server"]
    assert served[["item_id", "rank", "event", "model_version"]].values.tolist() == [
        ["9", 1, "impression", "2"], ["7", 2, "impression", "2"]]


def test_the_store_param_picks_the_backend():
    assert store_location(ServeConfig()) == Path("logs/feedback.db")
    url = "postgresql://recloop@db:5432/feedback"
    assert store_location(ServeConfig(feedback_store=url)) == url
    with pytest.raises(ValueError):
        ServeConfig(feedback_store="mysql://x")


def test_a_follower_reads_new_client_events_once_and_in_order(location):
    log = FeedbackLog(location).open()
    reader = FeedbackReader(location).open()
    try:
        assert reader.changed()
        assert reader.client_events(0, EVENTS) == ([], 0)
        log.append([click(1), click(2, user="u2", event="impression"), click(3, event="rating", value=2.0)])
        assert reader.changed()
        rows, mark = reader.client_events(0, EVENTS)
        assert [(r[1], r[2], r[4]) for r in rows] == [("u1", "1", "click"), ("u1", "3", "rating")]
        assert mark == 3
        assert not reader.changed()
        log.append([click(4, user="u2", event="like")])
        assert reader.changed()
        rows, mark = reader.client_events(mark, EVENTS)
        assert [(r[1], r[2]) for r in rows] == [("u2", "4")] and mark == 4
        assert reader.client_events(0, EVENTS, logged_since=time.time() + 60) == ([], 4)
    finally:
        reader.close()
        log.close()


WRITER = textwrap.dedent("""
    import sys
    from components.serving.feedback import FeedbackLog
    log = FeedbackLog(sys.argv[1], linger=0.01).open()
    for n in range(100_000):
        rows = [{"request_id": f"{n}-{j}", "item_id": "1", "timestamp": n, "event": "click", "source": "client"}
                for j in range(5)]
        log.append(rows)
        print(n, flush=True)  # after append returned: acknowledged
""")


def test_acknowledged_rows_survive_kill_9_of_the_writer(location):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(location)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    acknowledged = []
    try:
        for line in writer.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 200:
                writer.send_signal(signal.SIGKILL)  # mid-stream: the next batch is being committed
                break
    finally:
        writer.kill()
        writer.wait()
    assert len(acknowledged) == 200, "the writer died before acknowledging 200 batches"
    logged = set(read_feedback(location)["request_id"])
    missing = [f"{n}-{j}" for n in acknowledged for j in range(5) if f"{n}-{j}" not in logged]
    assert missing == []


def test_database_down_fails_the_append_and_a_restart_heals_it(postgres):
    url = postgres.create_database()
    log = FeedbackLog(url, linger=0.01).open()
    reader = FeedbackReader(url).open()
    try:
        log.append([click(1)])
        postgres.stop(immediate=True)
        with pytest.raises(FeedbackStoreUnavailable, match="could not commit"):
            log.append([click(2)])
        with pytest.raises(FeedbackStoreUnavailable, match="cannot be read"):
            reader.changed()
        postgres.start()
        log.append([click(3)])  # the writer connects again
        assert reader.changed()
    finally:
        reader.close()
        log.close()
    assert read_feedback(url)["request_id"].tolist() == ["r1", "r3"]


FULL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    from components.serving.feedback import FeedbackLog, FeedbackStoreUnavailable
    path = sys.argv[1]
    log = FeedbackLog(path, linger=0.01).open()
    row = lambda n: {"request_id": str(n), "item_id": "x" * 200, "timestamp": n, "event": "click",
                     "source": "client"}
    log.append([row(n) for n in range(10)])
    # No file of this process may grow past its current size: writes fail as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(os.path.getsize(path), os.path.getsize(path + "-wal")), hard))
    try:
        log.append([row(n) for n in range(10, 1_000)])
        print("acknowledged")
    except FeedbackStoreUnavailable as e:
        print("refused:", e)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.append([row(n) for n in range(2_000, 2_010)])
    log.close()
""")


def test_a_full_disk_fails_the_append_and_acknowledges_nothing(tmp_path):
    path = tmp_path / "feedback.db"
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: the feedback store") and "could not commit" in out.stdout
    ids = set(read_feedback(path)["request_id"].astype(int))
    assert ids == set(range(10)) | set(range(2_000, 2_010))


READ_ONLY = textwrap.dedent("""
    import sys
    from components.serving.feedback import FeedbackLog, FeedbackStoreUnavailable
    try:
        log = FeedbackLog(sys.argv[1]).open()
        log.append([{"item_id": "2", "timestamp": 2, "event": "click", "source": "client"}])
        print("acknowledged")
    except FeedbackStoreUnavailable as e:
        print("refused:", e)
""")


def _as_another_user() -> list[str]:
    """Root writes read-only files anyway: the writer then runs as nobody (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no user for whom the file is read-only")
    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


@pytest.mark.parametrize("writable_folder", [True, False])
def test_a_read_only_file_fails_clearly(writable_folder):
    folder = Path(tempfile.mkdtemp(prefix="recloop-ro-"))  # not under pytest's tmp: nobody must reach it
    try:
        path = folder / "feedback.db"
        log = FeedbackLog(path).open()
        log.append([click(1)])
        log.close()
        path.chmod(0o444)
        folder.chmod(0o777 if writable_folder else 0o555)
        out = subprocess.run([*_as_another_user(), sys.executable, "-c", READ_ONLY, str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("refused: the feedback store") and "readonly database" in out.stdout
        folder.chmod(0o755)
        assert read_feedback(path)["request_id"].tolist() == ["r1"]
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_rotation_moves_old_rows_to_parquet_and_keeps_the_rest(location, tmp_path):
    log = FeedbackLog(location).open()
    log.append([click(n) for n in range(1, 6)])
    boundary = time.time() + 0.01
    time.sleep(0.05)
    log.append([click(n) for n in range(6, 9)])
    serve = ServeConfig(feedback_keep_days=1, feedback_archive=tmp_path / "archive",
                        **({"feedback_store": location} if isinstance(location, str) else {"feedback_log": location}))
    rotation = rotate_feedback(serve, now=boundary + 86_400, chunk_rows=2)
    assert rotation.archived == 5 and len(rotation.files) == 3
    assert read_feedback(location)["request_id"].tolist() == ["r6", "r7", "r8"]
    archived = read_archive(tmp_path / "archive")
    assert archived["request_id"].tolist() == [f"r{n}" for n in range(1, 6)]
    assert archived["id"].tolist() == [1, 2, 3, 4, 5] and (archived["logged_at"] < boundary).all()
    log.append([click(9)])  # ids go on after rotated ones
    log.close()
    assert rotate_feedback(serve, now=boundary + 86_400).archived == 0
    assert read_feedback(location)["request_id"].tolist() == ["r6", "r7", "r8", "r9"]


def test_the_rotate_command_reads_its_params(tmp_path):
    FeedbackLog(tmp_path / "f.db").open().close()
    runner = CliRunner()
    base = ["feedback-rotate", "--set", f"serve.feedback_log={tmp_path / 'f.db'}"]
    refused = runner.invoke(cli, base)
    assert refused.exit_code == 2 and "serve.feedback_keep_days is null" in refused.output
    done = runner.invoke(cli, [*base, "--set", "serve.feedback_keep_days=30"])
    assert done.exit_code == 0 and "nothing logged before" in done.output
