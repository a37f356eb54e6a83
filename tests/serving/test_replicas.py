"""Two replicas (two `bentoml serve` processes) sharing one PostgreSQL feedback store and one registry:
a like acknowledged by one changes the user's very next answer on the other, both follow a promotion
on their own with no failed request, and with the database down both keep recommending, answer
/feedback with 503 and acknowledge nothing they did not commit."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from serving_harness import end_switch, history_with_likes, horror_likes, listed, post, start_server

from components.registry.registry import promote
from components.serving.feedback import read_feedback
from components.serving.package import log_bundle

pytestmark = pytest.mark.slow
WATCH_SECONDS = 2
FOLLOW_DEADLINE = 180  # far above what a switch takes; a replica that never switches fails the test


@pytest.fixture(scope="module")
def replicas(champion, registry_cfg, store, postgres, tmp_path_factory):
    """Replicas a and b: the same registry, BentoML store and PostgreSQL database, each its own port."""
    root = tmp_path_factory.mktemp("replicas")
    url = postgres.create_database()
    served = []
    try:
        for name in ("a", "b"):
            served.append(start_server(root, name, registry_cfg, store["bentoml_home"], feedback_store=url,
                                       watch_seconds=WATCH_SECONDS))
        yield served[0], served[1], url
    finally:
        for server in served:
            server.kill()


def test_a_like_on_one_replica_changes_the_next_answer_on_the_other(replicas, bundle):
    a, b, _ = replicas
    before = post(b.url, "/recommend", {"user_id": "1", "k": 10})
    likes = horror_likes(bundle, "1", 4, start=int(time.time()) - 3600)
    assert post(a.url, "/feedback", {"events": likes})["durable"]
    after = post(b.url, "/recommend", {"user_id": "1", "k": 10})  # b's very next answer for the user
    adhoc = post(b.url, "/recommend", {"k": 10, "history": history_with_likes(bundle, "1", likes)})
    assert listed(after) != listed(before)
    assert after["history_used"] == before["history_used"] + 4
    assert listed(after) == listed(adhoc)
    np.testing.assert_allclose([i["score"] for i in after["items"]], [i["score"] for i in adhoc["items"]],
                               rtol=1e-4, atol=1e-5)
    assert listed(post(a.url, "/recommend", {"user_id": "1", "k": 10})) == listed(adhoc)


def served_version(url: str) -> str:
    return post(url, "/info", {})["model_version"]


def test_both_replicas_follow_a_promotion_without_a_failed_request(replicas, registry_cfg, bundle_dir, champion):
    a, b, _ = replicas
    assert {served_version(a.url), served_version(b.url)} == {str(champion)}
    failures, versions, stop = [], {a.url: set(), b.url: set()}, threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                try:
                    response = c.post("/recommend", json={"user_id": "3", "k": 5})
                    response.raise_for_status()
                    versions[url].add(response.json()["model_version"])
                except Exception as e:  # any failure at all is what this test looks for
                    failures.append(f"{url}: {e!r}")

    threads = [threading.Thread(target=hammer, args=(server.url,)) for server in (a, b)]
    for t in threads:
        t.start()
    try:
        new = str(log_bundle(registry_cfg, bundle_dir))
        promote(registry_cfg, int(new))  # no /reload: each replica finds it on its own
        deadline, followed = time.monotonic() + FOLLOW_DEADLINE, {}
        while time.monotonic() < deadline and set(followed.values()) != {new}:
            followed = {server.url: served_version(server.url) for server in (a, b)}
            time.sleep(0.2)
        time.sleep(0.5)  # a few more requests on the new version
    finally:
        end_switch(stop, threads, registry_cfg, champion)
    assert failures == []
    assert followed == {a.url: new, b.url: new}, "both replicas serve the new champion"
    for url, seen in versions.items():
        assert seen == {str(champion), new}, f"{url} answered across the switch"


def send(url: str, ids: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/feedback", timeout=60, json={"events": [
        {"user_id": "u-replicas", "item_id": "1", "event": "click", "request_id": i} for i in ids]})


def test_database_down_both_replicas_refuse_feedback_and_keep_recommending(replicas, postgres):
    a, b, url = replicas
    acknowledged, refused = [], []
    for server in (a, b):
        ids = [f"up-{uuid.uuid4().hex[:8]}"]
        assert send(server.url, ids).status_code == 200
        acknowledged += ids
    postgres.stop(immediate=True)  # a crash: no checkpoint, recovery on restart
    try:
        for server in (a, b):
            ids = [f"down-{uuid.uuid4().hex[:8]}"]
            response = send(server.url, ids)
            assert response.status_code == 503, response.text
            assert "could not be written" in response.json()["error"]
            refused += ids
            post(server.url, "/recommend", {"user_id": "3", "k": 5})
    finally:
        postgres.start()
    for server in (a, b):  # each writer connects again
        ids = [f"back-{uuid.uuid4().hex[:8]}"]
        assert send(server.url, ids).status_code == 200
        acknowledged += ids
    found = set(read_feedback(url)["request_id"])
    assert set(acknowledged) <= found
    assert not set(refused) & found
