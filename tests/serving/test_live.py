"""A live service of 2 workers: feedback reaches the user's next answer on any worker, and every worker
follows a promotion of the registry's champion on its own, with no failed request during the switch."""
from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from serving_harness import end_switch, history_with_likes, horror_likes, listed, post, start_server

from components.registry.registry import promote
from components.serving.package import log_bundle

pytestmark = pytest.mark.slow
WATCH_SECONDS = 2
# Bounds of the waits below, far above what they take; a worker that never switches fails the test.
FOLLOW_DEADLINE = 180
ASKS = 12


@pytest.fixture(scope="module")
def live(champion, registry_cfg, store):
    served = start_server(store["root"], "live", registry_cfg, store["bentoml_home"], workers=2,
                          watch_seconds=WATCH_SECONDS)
    yield served
    served.kill()


def test_feedback_changes_the_next_answer_on_every_worker(live, bundle):
    """The horror example: likes of horror films through /feedback, and the user's very next answer
    is the ad-hoc answer for their stored history followed by those likes."""
    before = post(live.url, "/recommend", {"user_id": "1", "k": 10})
    likes = horror_likes(bundle, "1", 4, start=int(time.time()) - 3600)
    ack = post(live.url, "/feedback", {"events": likes + [{**likes[0], "item_id": "1", "event": "impression"}]})
    assert ack["durable"] and ack["accepted"] == 5
    answers = [post(live.url, "/recommend", {"user_id": "1", "k": 10}) for _ in range(ASKS)]
    adhoc = post(live.url, "/recommend", {"k": 10, "history": history_with_likes(bundle, "1", likes)})
    assert listed(answers[0]) != listed(before)
    assert answers[0]["history_used"] == before["history_used"] + 4  # the impression does not count
    for answer in answers:
        assert listed(answer) == listed(adhoc)
        np.testing.assert_allclose([i["score"] for i in answer["items"]], [i["score"] for i in adhoc["items"]],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([i["like_prob"] for i in answer["items"]],
                                   [i["like_prob"] for i in adhoc["items"]], atol=1e-5)
    assert not {e["item_id"] for e in likes} & set(listed(answers[0]))


def workers_versions(url: str, want: dict[int, str] | None = None, deadline: float = FOLLOW_DEADLINE,
                     ) -> dict[int, str]:
    """Each worker's served version from /info on new connections: until 2 workers are seen (and,
    given `want`'s version, until both serve it), or the deadline."""
    seen: dict[int, str] = {}
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        info = post(url, "/info", {})
        seen[info["worker"]] = info["model_version"]
        if len(seen) == 2 and (want is None or set(seen.values()) == {want}):
            break
        time.sleep(0.2)
    return seen


def test_every_worker_follows_a_promotion_without_a_failed_request(live, registry_cfg, bundle_dir, champion):
    before = workers_versions(live.url)
    assert len(before) == 2 and set(before.values()) == {str(champion)}
    failures, versions, stop = [], [], threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            while not stop.is_set():
                try:
                    response = c.post("/recommend", json={"user_id": "3", "k": 5})
                    response.raise_for_status()
                    versions.append(response.json()["model_version"])
                except Exception as e:  # any failure at all is what this test looks for
                    failures.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        new = log_bundle(registry_cfg, bundle_dir)
        promote(registry_cfg, new)  # no /reload, no import: the workers find it themselves
        after = workers_versions(live.url, want=str(new))
    finally:
        end_switch(stop, threads, registry_cfg, champion)
    assert failures == []
    assert after == {pid: str(new) for pid in before}, "every worker serves the new champion"
    assert {str(champion), str(new)} == set(versions)  # requests were answered across the switch
