"""Acknowledged feedback survives `kill -9` of the server: a second server, killed while clients are writing."""
from __future__ import annotations

import signal
import threading

import bentoml
import pytest
from serving_harness import start_server

from components.serving.feedback import read_feedback

pytestmark = pytest.mark.slow
WRITERS = 4
ACKS_BEFORE_KILL = 60


def test_acknowledged_feedback_survives_kill_9(champion, registry_cfg, store):
    server = start_server(store["root"], "durable", registry_cfg, store["bentoml_home"])
    acknowledged: list[str] = []
    broken: list[str] = []  # checks that failed inside a writer thread, where an assert only warns
    lock, enough = threading.Lock(), threading.Event()

    def write(writer: int) -> None:
        with bentoml.SyncHTTPClient(server.url, timeout=30) as c:
            for n in range(1000):  # bounded: the kill normally ends it long before
                ids = [f"w{writer}-{n}-{j}" for j in range(3)]
                try:
                    ack = c.feedback({"events": [{"item_id": "1", "event": "click", "user_id": f"u{writer}",
                                                  "request_id": i} for i in ids]})
                except Exception:  # the server is gone: what was acknowledged so far is what counts
                    return
                if ack != {"accepted": 3, "durable": True, "unknown_items": []}:
                    broken.append(f"writer {writer}: {ack}")
                    enough.set()  # no use waiting: the test fails below
                    return
                with lock:
                    acknowledged.extend(ids)
                    if len(acknowledged) >= ACKS_BEFORE_KILL * 3:
                        enough.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        assert enough.wait(120), f"only {len(acknowledged)} events acknowledged"
        server.kill(signal.SIGKILL)  # mid-stream: requests are still arriving
    finally:
        server.kill(signal.SIGKILL)
        for t in threads:
            t.join()
    assert broken == [], broken
    logged = set(read_feedback(server.feedback_log)["request_id"])
    missing = [i for i in acknowledged if i not in logged]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged events were lost"
