"""The bridge from the MLflow registry to BentoML: the served model is always the registry's champion.

`import_champion` copies the champion into BentoML's local model store (`bentoml.mlflow.import_model`),
labelled with its registry version, so `bentoml serve` and `bentoml build` pick it up as
`<bento_model>:latest` (a domain's champion as `<bento_model>-<domain>:latest`, labelled with its
domain; `stored_domains` lists them). Importing the version that is already the latest import is a no-op; an
import holds a file lock in BentoML's home, so the workers that all see a new champion at once
import it once.
"""
from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.config import RegistryConfig
from components.errors import RecloopError
from components.registry.registry import CHAMPION, alias_version, using_store

VERSION_LABEL = "registry_version"
DOMAIN_LABEL = "domain"


@dataclass
class BentoImport:
    tag: str
    version: int
    path: Path  # the MLflow model folder inside BentoML's store
    imported: bool  # false: this version was already the latest import

    def describe(self) -> str:
        action = "imported into" if self.imported else "already in"
        return f"registry version {self.version} {action} BentoML's model store as {self.tag}"


def latest_import(cfg: RegistryConfig) -> BentoImport | None:
    """The newest `<bento_model>` (of `cfg.domain`) in BentoML's store, or None when there is none."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(f"{cfg.bento_name}:latest")
    except NotFound:
        return None
    return BentoImport(str(model.tag), int(model.info.labels.get(VERSION_LABEL, -1)),
                       Path(model.path_of("mlflow_model")), imported=False)


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """An exclusive lock on BentoML's model store, across processes."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    home = Path(BentoMLContainer.bentoml_home.get())
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".recloop-import.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def import_champion(cfg: RegistryConfig) -> BentoImport:
    """Make BentoML's `<bento_model>:latest` (`<bento_model>-<domain>:latest`) the registry's current champion."""
    version = alias_version(cfg, CHAMPION)
    if version is None:
        raise RecloopError(f"registered model {cfg.registered_model!r} at {cfg.uri} has no {CHAMPION!r}: "
                           "run `recloop promote` first")
    with store_lock():
        return _import_version(cfg, version)


def _import_version(cfg: RegistryConfig, version: int) -> BentoImport:
    import bentoml

    latest = latest_import(cfg)
    if latest is not None and latest.version == version:
        return latest
    with using_store(cfg):
        labels = {VERSION_LABEL: str(version), "registered_model": cfg.registered_model}
        if cfg.domain is not None:
            labels[DOMAIN_LABEL] = cfg.domain
        model = bentoml.mlflow.import_model(
            cfg.bento_name, f"models:/{cfg.registered_model}/{version}", labels=labels,
            metadata={"registry_uri": cfg.uri, VERSION_LABEL: version})
    return BentoImport(str(model.tag), version, Path(model.path_of("mlflow_model")), imported=True)


def stored_domains(cfg: RegistryConfig) -> dict:
    """Each domain's latest import in BentoML's store (`<bento_model>-<domain>`): domain -> bentoml.Model."""
    import bentoml

    found = {}
    for model in bentoml.models.list():
        domain = model.info.labels.get(DOMAIN_LABEL)
        if domain is not None and model.tag.name == f"{cfg.bento_model}-{domain}" and domain not in found:
            found[domain] = bentoml.models.get(f"{model.tag.name}:latest")
    return dict(sorted(found.items()))
