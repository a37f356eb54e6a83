"""Faults through HTTP against a real `bentoml serve`: the registry unreadable during a reload, the
feedback log read-only or on a full disk. The service keeps recommending, answers 503 with the
reason, acknowledges nothing it did not commit, and heals when the fault clears: what it acknowledged
is in the log, what it refused is not. (PostgreSQL down: tests/serving/test_replicas.py.)"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from serving_harness import TOKEN, start_server

from components.serving.feedback import FeedbackLog, read_feedback

pytestmark = pytest.mark.slow
EVENTS_PER_REQUEST = 1000  # serve.max_feedback_events: a full disk is reached in a few requests
FULL_DISK_REQUESTS = 100  # far more than the WAL's 4 MB take; a log that never fills fails the test


def set_read_only(path: Path, read_only: bool) -> bool:
    """Make the file unwritable for the server (or writable again); False where this cannot be done.
    Root writes a 0444 file anyway: for root the file gets the immutable attribute instead."""
    if os.geteuid() != 0:
        path.chmod(0o444 if read_only else 0o644)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if read_only else "-i", str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def faulty(champion, registry_cfg, store, tmp_path_factory):
    """A server on its own copy of the registry (to break and mend) and a feedback log that starts
    read-only (where the file system allows it): the server must start on it anyway."""
    root = tmp_path_factory.mktemp("faults")
    shutil.copy(store["mlflow_db"], root / "mlflow.db")  # same versions, same artifact folders
    registry = registry_cfg.model_copy(update={"uri": f"sqlite:///{root / 'mlflow.db'}"})
    log = root / "faults-feedback.db"
    FeedbackLog(log).open().close()
    read_only = set_read_only(log, True)
    try:
        served = start_server(root, "faults", registry, store["bentoml_home"], max_payload_bytes=1_000_000)
    except BaseException:
        set_read_only(log, False)  # pytest removes its folders afterwards
        raise
    served.started_read_only = read_only
    yield served
    set_read_only(log, False)
    served.kill()


def send(url: str, ids: list[str]) -> httpx.Response:
    """One /feedback request: a click per request id."""
    return httpx.post(f"{url}/feedback", timeout=60, json={"events": [
        {"user_id": "u-faults", "item_id": "1", "event": "click", "request_id": i} for i in ids]})


def batch(tag: str, n: int = 3) -> list[str]:
    return [f"{tag}-{uuid.uuid4().hex[:8]}-{j}" for j in range(n)]


def recommend(url: str) -> dict:
    response = httpx.post(f"{url}/recommend", json={"user_id": "3", "k": 5}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def logged(server) -> set[str]:
    return set(read_feedback(server.feedback_log)["request_id"])


def test_a_read_only_log_refuses_feedback_until_it_can_be_written(faulty):
    if not faulty.started_read_only:
        pytest.skip("this file system cannot make the log read-only for this user")
    refused = batch("ro")
    response = send(faulty.url, refused)
    assert response.status_code == 503, response.text
    assert "could not be written" in response.json()["error"] and "readonly" in response.json()["error"]
    recommend(faulty.url)  # recommendations go on
    assert set_read_only(faulty.feedback_log, False)
    acknowledged = batch("rw")
    response = send(faulty.url, acknowledged)  # the writer opens the file again
    assert response.status_code == 200, response.text
    assert response.json()["durable"]
    found = logged(faulty)
    assert set(acknowledged) <= found and not set(refused) & found


def test_a_full_disk_refuses_feedback_and_keeps_what_it_acknowledged(faulty):
    set_read_only(faulty.feedback_log, False)
    assert send(faulty.url, batch("warm")).status_code == 200
    worker = httpx.post(f"{faulty.url}/info", json={}, timeout=60).json()["worker"]
    soft, hard = resource.prlimit(worker, resource.RLIMIT_FSIZE)
    wal = Path(f"{faulty.feedback_log}-wal")
    # No file of the worker may grow past the log's present size: writes fail as on a full disk.
    limit = max(faulty.feedback_log.stat().st_size, wal.stat().st_size if wal.exists() else 0)
    acknowledged, refused, error = [], [], ""
    resource.prlimit(worker, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        for n in range(FULL_DISK_REQUESTS):  # the WAL may have room left: write until it has none
            ids = batch(f"full{n}", EVENTS_PER_REQUEST)
            response = send(faulty.url, ids)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                refused, error = ids, response.json()["error"]
                break
            acknowledged += ids
        recommend(faulty.url)
    finally:
        resource.prlimit(worker, resource.RLIMIT_FSIZE, (soft, hard))
    assert refused, f"{FULL_DISK_REQUESTS} requests of {EVENTS_PER_REQUEST} events never filled the disk"
    assert "could not be written" in error
    after = batch("after")
    assert send(faulty.url, after).status_code == 200  # healed with the disk
    found = logged(faulty)
    assert set(acknowledged + after) <= found
    assert not set(refused) & found


def test_an_unreadable_registry_fails_the_reload_and_the_old_model_keeps_serving(faulty):
    reload = {"url": f"{faulty.url}/reload", "json": {}, "timeout": 120,
              "headers": {"Authorization": f"Bearer {TOKEN}"}}
    version = recommend(faulty.url)["model_version"]
    first = httpx.post(**reload)  # the registry's client is open: the fault hits a live connection
    assert first.status_code == 200 and first.json()["changed"] is False, first.text
    db = Path(faulty.params.parent / "mlflow.db")
    good = db.read_bytes()
    with open(db, "r+b") as f:  # in place: the server's pooled connection reads garbage too
        f.write(b"this registry store is unreadable\n" * 120)
    try:
        failed = httpx.post(**reload)
        answer = recommend(faulty.url)
    finally:
        with open(db, "r+b") as f:
            f.write(good)
    assert failed.status_code == 503, failed.text
    error = failed.json()["error"]
    assert error.startswith("could not load the champion (") and error.endswith(f"still serving version {version}")
    assert "file is not a database" in error  # the reason, not "no champion"
    assert answer["model_version"] == version
    mended = httpx.post(**reload)
    assert mended.status_code == 200 and mended.json()["version"] == version, mended.text
