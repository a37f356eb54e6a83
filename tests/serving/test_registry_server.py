"""The registry as a real MLflow tracking server (HTTP) that goes down: the service keeps serving its model,
/reload answers 503 with the reason instead of retrying for minutes (serve.registry_retries and
serve.registry_timeout_seconds bound MLflow's client), and once the server is back /reload picks up a
newly promoted champion. The champion watch reads the registry through the same bounded client.
(The registry's SQLite file unreadable: tests/serving/test_faults.py.)"""
from __future__ import annotations

import time

import httpx
import pytest
from mlflow_server import MlflowServer
from serving_harness import TOKEN, post, start_server

from components.config import RegistryConfig
from components.registry.registry import promote
from components.serving.bento import import_champion
from components.serving.package import log_bundle

pytestmark = pytest.mark.slow
# With MLflow's default retries a reload against a server that is down takes about 4 minutes, and
# BentoML cuts any request at 30 s: a 503 with the reason inside this timeout is the bounded answer.
RELOAD_TIMEOUT = 60


def reload(url: str) -> httpx.Response:
    return httpx.post(f"{url}/reload", json={}, timeout=RELOAD_TIMEOUT, headers={"Authorization": f"Bearer {TOKEN}"})


def test_a_tracking_server_down_fails_the_reload_with_the_reason_and_the_model_keeps_serving(
        bundle_dir, store, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-http")
    tracking = MlflowServer(root / "tracking").start()
    # Names of their own: this test's imports must not become the other tests' `recloop:latest`.
    registry = RegistryConfig(uri=tracking.uri, model_name="recloop-http", experiment="recloop-http",
                              bento_model="recloop-http")
    served = None
    try:
        first = log_bundle(registry, bundle_dir)
        second = log_bundle(registry, bundle_dir)
        promote(registry, first)
        import_champion(registry)
        served = start_server(root, "registry-http", registry, store["bentoml_home"])  # params' registry bounds
        ask = {"user_id": "3", "k": 5}
        assert post(served.url, "/recommend", ask)["model_version"] == str(first)

        tracking.kill()
        assert post(served.url, "/recommend", ask)["model_version"] == str(first)  # serving goes on
        started = time.monotonic()
        failed = reload(served.url)
        print(f"/reload answered {failed.status_code} {time.monotonic() - started:.2f} s after the tracking "
              "server went down")
        assert failed.status_code == 503, failed.text
        error = failed.json()["error"]
        assert error.startswith("could not load the champion (") and error.endswith(f"still serving version {first}")
        assert f"{tracking.uri}/api/" in error  # the reason names the server it could not reach
        assert post(served.url, "/recommend", ask)["model_version"] == str(first)

        tracking.start()  # same port, same store
        promote(registry, second)
        switched = reload(served.url)
        assert switched.status_code == 200, switched.text
        assert switched.json()["version"] == str(second) and switched.json()["changed"], switched.text
        assert post(served.url, "/recommend", ask)["model_version"] == str(second)
    finally:
        if served is not None:
            served.kill()
        tracking.kill()
