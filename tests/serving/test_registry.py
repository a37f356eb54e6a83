"""The MLflow registry: package -> challenger, promote, rollback through history, the pyfunc model, the CLI door.

Uses its own registered model name in the session's store, so the served `recloop` is untouched.
"""
from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from components.cli import cli
from components.errors import RecloopError
from components.registry import registry
from components.serving.package import log_bundle, package
from components.tracking import run_tags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg(registry_cfg):
    return registry_cfg.model_copy(update={"model_name": "recloop-registry-test"})


@pytest.fixture(scope="module")
def versions(cfg, tiny_paths, bundle_dir) -> list[int]:
    """Version 1 from the package stage, version 2 logged straight from a bundle folder."""
    first = package(cfg, tiny_paths).version
    assert yaml.safe_load((tiny_paths.reports / "package.json").read_text())["version"] == first
    assert registry.alias_version(cfg, registry.CHALLENGER) == first
    return [first, log_bundle(cfg, bundle_dir, metrics={"valid_ndcg@10": 0.5})]


def test_each_package_is_a_new_challenger_and_nothing_is_champion_yet(cfg, versions):
    assert versions == [1, 2]
    assert registry.alias_version(cfg, registry.CHALLENGER) == 2
    assert registry.alias_version(cfg, registry.CHAMPION) is None
    with pytest.raises(RecloopError, match="no earlier champion"):
        registry.rollback(cfg)


def test_the_package_run_carries_the_provenance_tags(cfg, versions):
    mlflow_client = registry.client(cfg)
    run_id = mlflow_client.get_model_version(cfg.model_name, str(versions[0])).tags["run_id"]
    assert mlflow_client.get_run(run_id).data.tags.items() >= run_tags().items()


def test_promote_and_roll_back_through_the_history(cfg, versions):
    assert registry.promote(cfg).current == 2  # the challenger by default
    assert registry.promote(cfg, 1).previous == 2
    assert registry.promote(cfg, 2).current == 2
    assert registry.promote(cfg, 2).previous == 2  # promoting the champion again changes nothing
    assert registry.rollback(cfg).current == 1
    assert registry.rollback(cfg).current == 2
    with pytest.raises(RecloopError, match="no earlier champion"):
        registry.rollback(cfg)
    listed = {v["version"]: v["aliases"] for v in registry.list_versions(cfg)}
    assert listed == {1: [], 2: ["challenger", "champion"]}
    with pytest.raises(RecloopError, match="no version 99"):
        registry.promote(cfg, 99)


def test_the_champion_loads_as_an_mlflow_pyfunc_that_recommends(cfg, versions, bundle):
    registry.promote(cfg, versions[0])
    with registry.using_store(cfg):
        model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion")
    out = model.predict(pd.DataFrame({"user_id": ["1", None], "history": [None, ["1", "260"]], "k": [3, 2]}))
    assert out.groupby("query").size().tolist() == [3, 2]
    assert (out["strategy"] == "history").all() and out["like_prob"].between(0, 1).all()
    # Nested request fields pass the signature's checks as objects.
    comedies = model.predict(pd.DataFrame({"user_id": ["1"], "k": [4], "filters": [{"categories": ["Comedy"]}],
                                           "context": [{"timestamp": 1_000_000_000}]}))
    categories = dict(zip(bundle.items["item_id"], bundle.items["categories"]))
    assert len(comedies) == 4 and all("Comedy" in categories[i] for i in comedies["item_id"])


def test_the_pyfunc_explores_with_the_policy_given_at_load(cfg, versions):
    registry.promote(cfg, versions[0])
    with registry.using_store(cfg):
        plain = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion")
        model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion",
                                         model_config={"exploration": {"kind": "epsilon", "epsilon": 0.5}})
    rows = pd.DataFrame({"user_id": ["1", "1"], "k": [5, 5], "request_id": ["a", "b"]})
    out, again = model.predict(rows), model.predict(rows)
    pd.testing.assert_frame_equal(out, again)  # a replayed request id gets the same list
    assert set(out["request_id"]) == {"a", "b"} and out["propensity"].between(0, 1, inclusive="right").all()
    assert (out["propensity"] < 1).any()
    top = plain.predict(rows)
    assert (top["propensity"] == 1.0).all() and top["request_id"].tolist() == ["a"] * 5 + ["b"] * 5


def test_cli_promote_lists_versions_and_explains_mistakes(cfg, versions, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"registry": cfg.model_dump()}))
    runner = CliRunner()
    listed = runner.invoke(cli, ["promote", "--params", str(params), "--list"])
    assert listed.exit_code == 0 and "version   2" in listed.output and "challenger" in listed.output
    wrong = runner.invoke(cli, ["promote", "--params", str(params), "--version", "99", "--no-bento"])
    assert wrong.exit_code == 2 and "no version 99" in wrong.output
    both = runner.invoke(cli, ["promote", "--params", str(params), "--version", "1", "--rollback"])
    assert both.exit_code == 2 and "not both" in both.output
