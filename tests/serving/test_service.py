"""The service against a real `bentoml serve`: every endpoint, every refusal, feedback round trip, reload under load."""
from __future__ import annotations

import threading
import time

import bentoml
import pytest
from bentoml.exceptions import BentoMLException
from serving_harness import TOKEN

from components.registry.registry import promote, rollback
from components.serving.feedback import read_feedback
from components.serving.package import log_bundle

pytestmark = pytest.mark.slow


def refused(call, *args) -> tuple[int, str]:
    with pytest.raises(BentoMLException) as caught:
        call(*args)
    return int(caught.value.error_code), str(caught.value)


def test_known_user_gets_k_unseen_catalog_items_with_scores_and_like_probabilities(client, bundle):
    answer = client.recommend({"user_id": "1", "k": 5})
    assert answer["strategy"] == "history" and answer["known_user"]
    items = answer["items"]
    assert [i["rank"] for i in items] == [1, 2, 3, 4, 5]
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < i["like_prob"] < 1 for i in items)
    seen = set(bundle.histories.loc[bundle.histories["user_id"] == "1", "item_id"])
    assert not seen & {i["item_id"] for i in items}
    titles = dict(zip(bundle.items["item_id"], bundle.items["title"]))
    assert all(i["title"] == titles[i["item_id"]] for i in items)


def test_explanations_name_history_items_and_shared_categories(client, bundle):
    answer = client.recommend({"user_id": "1", "k": 3, "explain": True})
    seen = set(bundle.histories.loc[bundle.histories["user_id"] == "1", "item_id"])
    for item in answer["items"]:
        because = item["explanation"]["because_of"]
        assert because and {b["item_id"] for b in because} <= seen
        for attribute in item["explanation"]["attributes"]:
            assert attribute.split(" (")[0] in item["categories"]


def test_adhoc_history_reports_unknown_items_and_excludes_what_it_saw(client):
    answer = client.recommend({"history": ["1", {"item_id": "260", "event": "rate", "value": 5.0}, "no-such-item"],
                               "k": 10, "filters": {"exclude_items": ["356"]}})
    assert answer["strategy"] == "history" and not answer["known_user"]
    assert answer["unknown_items"] == ["no-such-item"]
    assert answer["history_used"] == 2
    assert not {"1", "260", "356"} & {i["item_id"] for i in answer["items"]}


def test_unknown_user_gets_the_documented_cold_start(client, bundle):
    popular = client.recommend({"user_id": "never-seen", "k": 3})
    assert popular["strategy"] == "popularity" and not popular["known_user"]
    counts = dict(zip(bundle.items["item_id"], bundle.items["popularity"]))
    assert [counts[i["item_id"]] for i in popular["items"]] == sorted(counts.values(), reverse=True)[:3]
    texty = client.recommend({"user_id": "never-seen", "text": "animated toys come to life", "k": 3})
    assert texty["strategy"] == "text"
    assert "Toy Story" in " ".join(i["title"] for i in texty["items"])


def test_category_and_domain_filters_restrict_the_answer(client, bundle):
    answer = client.recommend({"user_id": "1", "k": 5, "filters": {"categories": ["Horror"], "domain": "movies"}})
    assert answer["items"] and all("Horror" in i["categories"] for i in answer["items"])


def test_similar_items_by_id_and_by_free_text(client):
    by_item = client.similar_items({"item_id": "1", "k": 4})
    assert by_item["by"] == "item" and len(by_item["items"]) == 4
    assert "1" not in {i["item_id"] for i in by_item["items"]}
    by_text = client.similar_items({"text": "a space opera with jedi knights", "k": 5})
    assert by_text["by"] == "text"
    assert any("Star Wars" in i["title"] for i in by_text["items"])


def test_bad_input_gets_a_4xx_that_says_what_to_fix_and_one_log_line(client, http, server):
    logged_before = server.log.read_text()
    cases = [
        ({"history": []}, 400, "history is empty"),
        ({"user_id": "1", "k": 0}, 400, "k must be between 1 and 50"),
        ({"user_id": "1", "k": 51}, 400, "k must be between 1 and 50"),
        ({"user_id": "1", "filters": {"categories": ["Comdy"]}}, 400, "unknown categories"),
        ({"user_id": "1", "filters": {"domain": "books"}}, 400, "unknown domain"),
        ({"text": "   "}, 400, "text is empty"),
        ({"history": [{"item_id": "1", "timestamp": 10**17}]}, 400, "far outside the data"),
        ({"history": [{"item_id": "1", "timestamp": 1_700_000_000_000}]}, 400, "not milliseconds"),
    ]
    for body, status, message in cases:
        code, text = refused(client.recommend, body)
        assert (code, message in text) == (status, True), body
    assert refused(client.similar_items, {"item_id": "no-such-item"})[0] == 404
    assert refused(client.similar_items, {"item_id": "1", "text": "both"})[0] == 400
    raw = [
        ("/recommend", b'{"user_id": "1", "k": "ten"}', 400, "k"),
        ("/recommend", b'{"history": 5}', 400, "history"),
        ("/recommend", b'{"user_id": "1", "kk": 3}', 400, "kk"),
        ("/recommend", b'{not json', 400, "JSON"),
        ("/feedback", b'{"events": [{"item_id": "1", "event": "smile"}]}', 400, "event"),
        ("/feedback", b'{"events": [{"item_id": "1", "event": "rating"}]}', 400, "needs its value"),
        ("/feedback", b'{"events": []}', 400, "events is empty"),
        ("/feedback", b'{"events": [{"item_id": "1", "event": "click", "timestamp": 100000000000000000}]}', 400,
         "far outside the data"),
        ("/recommend", b'{"history": [' + b'"1",' * 10_000 + b'"1"]}', 413, "over the limit"),
    ]
    for path, body, status, message in raw:
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (path, body[:60], response.text)
        assert message in response.text
    # Each refusal is one WARNING line; none is an ERROR with a traceback.
    time.sleep(0.5)  # the server's log lines reach the file as written (unbuffered); let the last one land
    logged = server.log.read_text()[len(logged_before):]
    refusals = len(cases) + 2 + len(raw)
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged[-3000:]
    assert logged.count("[WARNING]") >= refusals and logged.count(" answered 4") >= refusals, logged[-3000:]


def test_feedback_round_trip_lands_in_the_log_with_served_impressions(client, server):
    served = client.recommend({"user_id": "2", "k": 3})
    rid, first = served["request_id"], served["items"][0]["item_id"]
    ack = client.feedback({"events": [
        {"user_id": "2", "item_id": first, "event": "click", "request_id": rid, "rank": 1},
        {"user_id": "2", "item_id": first, "event": "rating", "value": 4.5, "request_id": rid},
        {"user_id": "2", "item_id": "brand-new", "event": "like"}]})
    assert ack == {"accepted": 3, "durable": True, "unknown_items": ["brand-new"]}
    log = read_feedback(server.feedback_log)
    impressions = log[(log["request_id"] == rid) & (log["source"] == "server")]
    assert impressions["item_id"].tolist() == [i["item_id"] for i in served["items"]]
    assert impressions["rank"].tolist() == [1, 2, 3] and impressions["like_prob"].notna().all()
    client_rows = log[(log["user_id"] == "2") & (log["source"] == "client")]
    assert client_rows["event"].tolist()[-3:] == ["click", "rating", "like"]
    assert client_rows["value"].tolist()[-3:] == [1.0, 4.5, 1.0]


def test_health_info_and_metrics(client, http):
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    info = client.info()
    assert info["items"] > 0 and info["limits"]["max_k"] == 50
    # The running app answers through recloop's request-timeout middleware, not BentoML's leaking one.
    assert info["timeout_patch"] is True
    metrics = http.get("/metrics").text
    assert "recloop_recommendations_total" in metrics and "bentoml_service_request_total" in metrics


def test_reload_needs_the_token(server):
    with bentoml.SyncHTTPClient(server.url, token="wrong") as wrong:
        assert refused(wrong.reload)[0] == 401


def test_reload_switches_to_the_new_champion_without_failing_requests_in_flight(
        server, registry_cfg, bundle_dir, champion):
    new = log_bundle(registry_cfg, bundle_dir)
    promote(registry_cfg, new)
    failures, answered, stop, started = [], [], threading.Event(), threading.Barrier(4)

    def hammer() -> None:
        with bentoml.SyncHTTPClient(server.url, timeout=60) as c:
            started.wait()
            while not stop.is_set():
                begin = time.monotonic()
                try:
                    version = c.recommend({"user_id": "3", "k": 5})["model_version"]
                    answered.append((begin, time.monotonic(), version))
                except Exception as e:  # any failure at all is what this test looks for
                    failures.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with bentoml.SyncHTTPClient(server.url, token=TOKEN, timeout=120) as admin:
            started.wait()
            reload_began = time.monotonic()
            done = admin.reload()
            reload_ended = time.monotonic()
            after = admin.info()["model_version"]
            while not any(begin > reload_ended for begin, _, _ in answered):
                time.sleep(0.05)  # at least one request wholly after the switch
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert done["changed"] and done["previous_version"] == str(champion) and done["version"] == str(new)
    assert after == str(new) and {v for _, _, v in answered} == {str(champion), str(new)}
    # Requests were answered while the new model loaded (the reload call was in flight): the old
    # model served them, and every request begun after the switch got the new one.
    during = [v for begin, end, v in answered if reload_began < begin and end < reload_ended]
    assert during and str(champion) in during
    assert {v for begin, _, v in answered if begin > reload_ended} == {str(new)}
    # Put the session's champion back for whatever runs next.
    assert rollback(registry_cfg).current == champion
    with bentoml.SyncHTTPClient(server.url, token=TOKEN, timeout=120) as admin:
        assert admin.reload()["version"] == str(champion)
