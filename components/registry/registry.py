"""The MLflow model registry: register a logged model as a new version, alias it, promote it, roll back.

Aliases carry the state: `challenger` is the latest packaged version, `champion` the one served.
Every promotion appends the new champion to the registered model's tag `champion_history`
(a JSON list of versions), so `rollback` knows which version served before, however many
promotions and rollbacks ago.

A domain's model (a catalog served beside the default one, `registry.domain`) is a registered model
of its own, `<model_name>-<domain>`, tagged `domain`, with the same aliases and history;
`promoted_domains` finds every domain that has a champion.

Everything goes through an `MlflowClient` bound to the configured URI: nothing global changes
on import, and tests can point each call at their own store. What the model is (recloop's pyfunc
face of a serving bundle) is the caller's business: `components/serving/package.py`.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.config import RegistryConfig
from components.errors import RecloopError
from components.tracking import ensure_experiment, metric_key, run_tags

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
# On a domain's registered model (`<model_name>-<domain>`): the domain it serves, what `promoted_domains` reads.
DOMAIN_TAG = "domain"


@dataclass
class Promotion:
    """What a promote or rollback did: the champion before and after."""

    model_name: str
    previous: int | None
    current: int

    def describe(self) -> str:
        before = f"version {self.previous}" if self.previous is not None else "no champion"
        return f"{self.model_name}: champion is now version {self.current} (was {before})"


def bound_http_requests(retries: int, timeout_seconds: int) -> None:
    """Bound every MLflow HTTP request of this process (a tracking server as registry): `timeout_seconds`
    to connect and to read, `retries` retries with a 1-s backoff factor. MLflow reads these variables at
    each request; its defaults (7 retries, factor 2) keep retrying a server that is down for about 4
    minutes. Process-wide: for a server (the service), which must fail fast and keep serving."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_seconds)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"


def client(cfg: RegistryConfig):
    """An MlflowClient for the registry (tracking and registry share the URI)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cfg.uri, registry_uri=cfg.uri)


@contextmanager
def using_store(cfg: RegistryConfig) -> Iterator[None]:
    """Point mlflow's global tracking and registry URIs at `cfg.uri` for the block, then restore them.

    Only for APIs that read the globals (fluent logging, `models:/` URIs); everything else takes
    an explicit client.
    """
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(cfg.uri)
    mlflow.set_registry_uri(cfg.uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _artifact_location(cfg: RegistryConfig) -> str | None:
    if cfg.uri.startswith("sqlite:///"):
        # Beside the database file, not wherever the current directory happens to be.
        return (Path(cfg.uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


def register(cfg: RegistryConfig, log_model: Callable[[], str], run_name: str = "package",
             metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> int:
    """Register what `log_model()` logs as a new version of `cfg.registered_model`, aliased `challenger`.

    `log_model` runs inside a new run of the registry's experiment (with `metrics` and provenance
    tags) and returns the logged model's URI. The version carries `tags` and the run's id.
    Returns the new version number.
    """
    import mlflow

    mlflow_client = client(cfg)
    try:
        experiment_id = ensure_experiment(mlflow_client, cfg.experiment, _artifact_location(cfg))
    except Exception as e:  # an unreachable server or a broken store: say which
        raise RecloopError(f"the MLflow registry at {cfg.uri!r} cannot be used ({e}): fix registry.uri") from None
    with using_store(cfg), mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags()) as run:
        if metrics:
            mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
        model_uri = log_model()
        version = int(mlflow.register_model(model_uri, cfg.registered_model).version)
        for key, value in {**(tags or {}), "run_id": run.info.run_id}.items():
            mlflow_client.set_model_version_tag(cfg.registered_model, str(version), key, str(value))
    if cfg.domain is not None:
        mlflow_client.set_registered_model_tag(cfg.registered_model, DOMAIN_TAG, cfg.domain)
    mlflow_client.set_registered_model_alias(cfg.registered_model, CHALLENGER, str(version))
    return version


def alias_version(cfg: RegistryConfig, alias: str) -> int | None:
    """The version behind `alias`, or None when the alias (or the model) does not exist. A registry
    that cannot be read (a broken store, a server down) raises: that is no answer about the alias."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client(cfg).get_model_version_by_alias(cfg.registered_model, alias).version)
    except MlflowException as e:
        # MLflow's codes for a missing model and a missing alias (SQL and REST stores alike).
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def for_domain(cfg: RegistryConfig, domain: str | None) -> RegistryConfig:
    """The registry config of `domain`'s model (None: the default model's)."""
    return cfg if cfg.domain == domain else RegistryConfig.model_validate({**cfg.model_dump(), "domain": domain})


def promoted_domains(cfg: RegistryConfig) -> dict[str, int]:
    """Every domain with a champion: domain -> its champion's version, read from the registered models
    `<model_name>-<domain>` that `register` tagged with their domain (a foundation or another model
    whose name merely starts the same way is not one). A registry that cannot be read raises."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    prefix = f"{cfg.model_name}-"
    found: dict[str, int] = {}
    # LIKE treats `_` as a wildcard too: the exact prefix and the tag are checked below.
    for model in mlflow_client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
        domain = model.tags.get(DOMAIN_TAG)
        if domain is None or model.name != prefix + domain:
            continue
        try:
            found[domain] = int(mlflow_client.get_model_version_by_alias(model.name, CHAMPION).version)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
    return dict(sorted(found.items()))


def _history(mlflow_client, cfg: RegistryConfig) -> list[int]:
    tags = mlflow_client.get_registered_model(cfg.registered_model).tags
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def promote(cfg: RegistryConfig, version: int | None = None) -> Promotion:
    """Make `version` (default: the current challenger) the champion, remembering the one it replaces."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    if version is None:
        version = alias_version(cfg, CHALLENGER)
        if version is None:
            raise RecloopError(f"registered model {cfg.registered_model!r} has no {CHALLENGER!r} at {cfg.uri}: "
                               "run `recloop package` first, or name one with --version")
    try:
        mlflow_client.get_model_version(cfg.registered_model, str(version))
    except MlflowException:
        raise RecloopError(f"registered model {cfg.registered_model!r} has no version {version} at {cfg.uri}; "
                           f"`recloop promote --list` shows the versions") from None
    previous = alias_version(cfg, CHAMPION)
    if previous == version:
        return Promotion(cfg.registered_model, previous, version)
    history = _history(mlflow_client, cfg)
    if not history and previous is not None:
        history = [previous]  # a champion set by hand before recloop managed the history
    _set_champion(mlflow_client, cfg, version, [*history, version])
    return Promotion(cfg.registered_model, previous, version)


def rollback(cfg: RegistryConfig) -> Promotion:
    """Give `champion` back to the version that held it before the current one."""
    mlflow_client = client(cfg)
    current = alias_version(cfg, CHAMPION)
    history = _history(mlflow_client, cfg) if current is not None else []
    # Drop the current champion (and any repeats of it at the end), then the last one left served before.
    while history and history[-1] == current:
        history.pop()
    if current is None or not history:
        raise RecloopError(f"registered model {cfg.registered_model!r} has no earlier champion to roll back to "
                           f"(current: {current}); promote a version explicitly with --version")
    _set_champion(mlflow_client, cfg, history[-1], history)
    return Promotion(cfg.registered_model, current, history[-1])


def _set_champion(mlflow_client, cfg: RegistryConfig, version: int, history: list[int]) -> None:
    mlflow_client.set_registered_model_alias(cfg.registered_model, CHAMPION, str(version))
    mlflow_client.set_registered_model_tag(cfg.registered_model, HISTORY_TAG, json.dumps(history))
    mlflow_client.set_model_version_tag(cfg.registered_model, str(version), "promoted_at", str(int(time.time())))


def list_versions(cfg: RegistryConfig) -> list[dict]:
    """Every version with its aliases, tags and creation time, newest first."""
    mlflow_client = client(cfg)
    try:
        versions = mlflow_client.search_model_versions(f"name='{cfg.registered_model}'")
    except Exception as e:
        raise RecloopError(f"cannot read the MLflow registry at {cfg.uri!r}: {e}") from None
    # search results leave aliases out: the registered model holds them.
    aliases: dict[int, list[str]] = {}
    if versions:
        for alias, version in mlflow_client.get_registered_model(cfg.registered_model).aliases.items():
            aliases.setdefault(int(version), []).append(alias)
    return sorted(({"version": int(v.version), "aliases": sorted(aliases.get(int(v.version), [])),
                    "created": v.creation_timestamp // 1000, "tags": dict(v.tags)} for v in versions),
                  key=lambda v: -v["version"])
