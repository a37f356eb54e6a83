"""Session fixtures: a tiny trained model, its bundle, a registry with it as champion, and a real `bentoml serve`.

Everything lives under pytest's temporary folder: the MLflow SQLite store, BentoML's model store
(BENTOML_HOME) and the feedback logs. The server is started once per session on a free port,
waited for (/readyz), and killed at the end.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from components.config import Paths, RegistryConfig
from components.serving.bundle import Bundle, load_bundle, write_bundle

# The helpers sit beside this file (the test folders are not packages); a unique module name, since
# every test folder's conftest is importable as `conftest`.
sys.path.insert(0, str(Path(__file__).parent))
from postgres_server import PostgresServer
from serving_harness import Server, start_server, train_tiny


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def bundle_dir(tiny_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    write_bundle(tiny_dirs["finetuned"], tiny_dirs["split"], tiny_dirs["features"], out)
    return out


@pytest.fixture(scope="session")
def bundle(bundle_dir) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, Path]:
    """The MLflow store and BentoML home of this session (BentoML reads BENTOML_HOME when first used)."""
    root = tmp_path_factory.mktemp("stores")
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    return {"root": root, "bentoml_home": root / "bentoml", "mlflow_db": root / "mlflow.db"}


@pytest.fixture(scope="session")
def registry_cfg(store) -> RegistryConfig:
    return RegistryConfig(uri=f"sqlite:///{store['mlflow_db']}")


@pytest.fixture(scope="session")
def tiny_paths(tiny_dirs, tmp_path_factory) -> Paths:
    """Paths as the package stage reads them: models/finetuned, split, features, reports."""
    return Paths(split=tiny_dirs["split"], features=tiny_dirs["features"], models=tiny_dirs["finetuned"].parent,
                 reports=tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="session")
def champion(registry_cfg, tiny_paths) -> int:
    """Version 1 of `recloop`, packaged, promoted and imported into BentoML's store."""
    from components.registry.registry import promote
    from components.serving.bento import import_champion
    from components.serving.package import package

    version = package(registry_cfg, tiny_paths).version
    promote(registry_cfg, version)
    import_champion(registry_cfg)
    return version


@pytest.fixture(scope="session")
def server(champion, registry_cfg, store) -> Server:
    served = start_server(store["root"], "main", registry_cfg, store["bentoml_home"])
    yield served
    served.kill()


@pytest.fixture(scope="session")
def client(server):
    import bentoml

    with bentoml.SyncHTTPClient(server.url, timeout=60) as c:
        yield c


@pytest.fixture()
def http(server):
    """A plain HTTP client for what a typed client would refuse to send (bad types, huge bodies)."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server per test module (a module may stop and restart its own)."""
    server = PostgresServer().start()
    yield server
    server.remove()
