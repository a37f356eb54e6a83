"""One service, many domains: a catalog brought up zero-shot joins a running service on /reload.

The documented commands, in process (`recloop foundation`, `ingest`, `split`, `featurize`, `transfer
--mode zero-shot`, `package` and `promote` with `registry.domain`): a foundation pretrained on the serving
tests' tiny MovieLens catalog, brought zero-shot to the UniSRec "Scientific" fixture (93 Amazon items with
their text), packaged and promoted as the domain `scientific` while a real `bentoml serve` runs on the
default champion; the zero-shot model carries its content prior (weight chosen on the foundation's source)
and is served blended with it. The registry and BentoML model names are this module's own (`shop`), so no other
server of the session sees the domain.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner
from serving_harness import TOKEN, listed, post, start_server

from components.cli import cli
from components.config import RegistryConfig, load_params
from components.errors import RecloopError
from components.registry.registry import CHAMPION, client, for_domain, promote, promoted_domains
from components.serving.bento import import_champion
from components.serving.bundle import bundle_mode
from components.serving.package import package

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
DOMAIN = "scientific"
FOLLOW_DEADLINE = 120  # far above the watch's seconds; a worker that never follows fails the test
TINY_MODEL = ["model.dim=16", "model.layers=1", "model.heads=1", "model.max_len=20", "model.text_hidden=32"]


@pytest.fixture(scope="module")
def shop(store) -> RegistryConfig:
    return RegistryConfig(uri=f"sqlite:///{store['root'] / 'shop.db'}", model_name="shop", bento_model="shop",
                          experiment="shop-package")


@pytest.fixture(scope="module")
def default_champion(shop, tiny_paths) -> int:
    """The default champion: the serving tests' tiny MovieLens model."""
    version = package(shop, tiny_paths).version
    promote(shop, version)
    import_champion(shop)
    return version


@pytest.fixture(scope="module")
def live(default_champion, shop, store):
    """The default champion served, no watch: only /reload switches."""
    served = start_server(store["root"], "domains", shop, store["bentoml_home"])
    yield served
    served.kill()


def recloop(params: Path, folder: Path, *args: str) -> str:
    """`recloop <args>` with `params` and every path under `folder`; its output."""
    paths = [f"paths.{name}={folder / name}" for name in ("canonical", "split", "features", "models", "reports")]
    sets = [*paths, f"paths.validated={folder / 'canonical'}", f"featurize.cache_dir={folder / 'cache'}",
            "tracking.uri=null", *TINY_MODEL]
    result = CliRunner().invoke(cli, [*args, "--params", str(params), *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    return result.output


def reload(url: str) -> dict:
    response = httpx.post(f"{url}/reload", headers={"Authorization": f"Bearer {TOKEN}"}, json={}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_domain_is_a_registered_model_of_its_own_and_only_a_promoted_one_is_served(tmp_path):
    shop = RegistryConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="shop", bento_model="shop")
    office = for_domain(shop, "office")
    assert (office.registered_model, office.bento_name, office.domain) == ("shop-office", "shop-office", "office")
    assert for_domain(office, None) == shop and (shop.registered_model, shop.bento_name) == ("shop", "shop")
    with pytest.raises(RecloopError, match="registry.domain"):
        load_params(None, ["registry.domain=Office Products"])  # not a BentoML model name
    mlflow_client = client(shop)
    mlflow_client.create_registered_model("shop-unpromoted", tags={"domain": "unpromoted"})  # no champion
    mlflow_client.create_registered_model("shop-foundation")  # same prefix, not a domain
    mlflow_client.create_registered_model("shop-mislabelled", tags={"domain": "office"})
    assert promoted_domains(shop) == {}
    # How a served model was made: the mode transfer saved with it; models without one were trained.
    assert [bundle_mode({"metrics": m}) for m in ({"mode": "zero-shot"}, {"mode": "adapter"}, {})] == [
        "zero-shot", "adapter", "trained"]
    assert bundle_mode({}) == "trained"


@pytest.fixture(scope="module")
def catalog(shop, tiny_dirs, tmp_path_factory) -> Path:
    """The new catalog brought up zero-shot and packaged as the domain (not promoted): its folder."""
    folder = tmp_path_factory.mktemp("scientific")
    params = folder / "params.yaml"
    params.write_text(f"registry: {shop.model_dump_json()}\n")
    source = f"{{split: {tiny_dirs['split']}, features: {tiny_dirs['features']}, domain: movies}}"
    recloop(params, folder, "foundation", "--set", f"foundation.sources=[{source}]", "--set", "pretrain.epochs=1")
    recloop(params, folder, "ingest", "--set", "ingest.source=unisrec",
            "--set", f"ingest.path={REPO / 'tests' / 'fixtures' / 'unisrec'}", "--set", f"ingest.domain={DOMAIN}")
    recloop(params, folder, "split", "--set", "split.mode=given")
    recloop(params, folder, "featurize")
    # foundation.sources as the foundation had them: the content prior's weight is chosen there.
    assert "transfer (zero-shot)" in recloop(params, folder, "transfer", "--mode", "zero-shot", "--set",
                                             f"transfer.foundation={folder / 'models' / 'foundation'}",
                                             "--set", f"foundation.sources=[{source}]")
    assert "shop-scientific version 1 (challenger, zero-shot)" in recloop(params, folder, "package",
                                                                           "--set", f"registry.domain={DOMAIN}")
    return folder


def served_domains(url: str, want: dict[str, str]) -> dict[str, str]:
    """The domains /info lists (domain -> version), asked until they are `want` or the deadline."""
    end = time.monotonic() + FOLLOW_DEADLINE
    while True:
        seen = {d: info["model_version"] for d, info in post(url, "/info", {})["domains"].items()}
        if seen == want or time.monotonic() > end:
            return seen
        time.sleep(0.2)


def test_a_domain_brought_up_zero_shot_joins_a_running_service_on_reload(live, shop, catalog):
    default = {"user_id": "1", "k": 5}
    before = post(live.url, "/recommend", default)
    assert before["domain"] is None and before["mode"] == "trained"
    assert post(live.url, "/info", {})["domains"] == {}

    params = catalog / "params.yaml"
    recloop(params, catalog, "promote", "--no-bento", "--set", f"registry.domain={DOMAIN}")  # the service imports it
    assert promoted_domains(shop) == {DOMAIN: 1}
    assert f"domain {DOMAIN}: champion version 1" in recloop(params, catalog, "promote", "--list")

    # Not served before the reload: a request of the domain falls back to the default model.
    items = pd.read_parquet(catalog / "split" / "items.parquet")["item_id"].astype(str)
    history = items.iloc[:3].tolist()
    ask = {"history": history, "context": {"domain": DOMAIN}, "k": 5}
    assert post(live.url, "/recommend", ask)["domain"] is None

    switched = reload(live.url)
    assert switched["domains"] == {DOMAIN: "1"} and switched["changed"] and switched["failed"] == {}
    assert switched["version"] == switched["previous_version"] == before["model_version"]

    answer = post(live.url, "/recommend", ask)
    assert (answer["domain"], answer["mode"], answer["strategy"]) == (DOMAIN, "zero-shot", "history")
    assert answer["scoring"] == "cosine+content" and before["scoring"] == "dot"  # blended with its content prior
    assert answer["model_version"] == "1" and len(answer["items"]) == 5
    assert set(listed(answer)) <= set(items) - set(history)  # the new catalog's items, seen ones filtered
    user = pd.read_parquet(catalog / "split" / "train.parquet")["user_id"].astype(str).iloc[0]
    known = post(live.url, "/recommend", {"user_id": user, "context": {"domain": DOMAIN}, "k": 3})
    assert known["known_user"] and known["domain"] == DOMAIN and set(listed(known)) <= set(items)

    # Requests without the domain (or with a domain not promoted) are answered as before.
    after = post(live.url, "/recommend", default)
    assert listed(after) == listed(before) and after["domain"] is None and after["mode"] == "trained"
    assert post(live.url, "/recommend", {**default, "context": {"domain": "movies"}})["domain"] is None
    info = post(live.url, "/info", {})
    assert info["model_version"] == before["model_version"] and info["mode"] == "trained"
    prior = json.loads((catalog / "reports" / "transfer.json").read_text())["content_prior"]
    assert info["domains"] == {DOMAIN: {"model_version": "1", "mode": "zero-shot", "scoring": "cosine+content",
                                        "content_prior": {"weight": prior["weight"], "history_items": 10,
                                                          "normalisation": "whiten"},
                                        "items": len(items), "users": 5}}
    assert info["scoring"] == "dot" and info["content_prior"] is None
    feedback = post(live.url, "/feedback", {"events": [{"user_id": user, "item_id": items.iloc[0], "event": "click",
                                                        "domain": DOMAIN}]})
    assert feedback["unknown_items"] == []  # the domain's catalog knows it
    assert reload(live.url)["changed"] is False

    # The domain loses its champion: the next reload drops it, and its requests go to the default model again.
    client(shop).delete_registered_model_alias(for_domain(shop, DOMAIN).registered_model, CHAMPION)
    assert promoted_domains(shop) == {}
    assert reload(live.url)["domains"] == {}
    assert post(live.url, "/recommend", ask)["domain"] is None


def test_the_champion_watch_follows_the_promoted_domains(default_champion, catalog, shop, store):
    """A service started with a promoted domain serves it; its watch drops the domain when it loses its
    champion and adds it back when it is promoted again, with no /reload."""
    domain = for_domain(shop, DOMAIN)
    promote(domain, 1)
    import_champion(domain)  # as `recloop promote` does: what a (re)started service finds in the store
    served = start_server(store["root"], "domains-watch", shop, store["bentoml_home"], watch_seconds=1)
    try:
        assert served_domains(served.url, {DOMAIN: "1"}) == {DOMAIN: "1"}
        items = pd.read_parquet(catalog / "split" / "items.parquet")["item_id"].astype(str)
        ask = {"history": items.iloc[:2].tolist(), "context": {"domain": DOMAIN}}
        client(shop).delete_registered_model_alias(domain.registered_model, CHAMPION)
        assert served_domains(served.url, {}) == {}
        assert post(served.url, "/recommend", ask)["domain"] is None
        promote(domain, 1)
        assert served_domains(served.url, {DOMAIN: "1"}) == {DOMAIN: "1"}
        answer = post(served.url, "/recommend", ask)
        assert (answer["domain"], answer["mode"]) == (DOMAIN, "zero-shot") and set(listed(answer)) <= set(items)
    finally:
        served.kill()
