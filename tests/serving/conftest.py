"""Session fixtures: a tiny trained model, its bundle, a registry with it as champion, and a real `bentoml serve`.

Everything lives under pytest's temporary folder: the MLflow SQLite store, BentoML's model store
(BENTOML_HOME) and the feedback logs. The server is started once per session on a free port,
waited for (/readyz), and killed at the end.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from components.config import Paths, RegistryConfig
from components.serving.bundle import Bundle, load_bundle, write_bundle

sys.path.insert(0, str(Path(__file__).parent))
from tiny import train_tiny  # noqa: E402  (a helper module beside this conftest, not a package)

REPO = Path(__file__).parents[2]
BENTOML = REPO / ".venv" / "bin" / "bentoml"
SERVICE = "components.serving.service:RecloopService"
TOKEN = "test-reload-token"
READY_TIMEOUT = 240


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    params: Path
    feedback_log: Path
    log: Path

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal bentoml's arbiter and its workers (which run in sessions of their own) and wait for them."""
        try:
            processes = [psutil.Process(self.process.pid)]
            processes += processes[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        _, alive = psutil.wait_procs(processes, timeout=30)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=30)
        self.process.poll()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, name: str, registry: RegistryConfig, bentoml_home: Path) -> Server:
    """`bentoml serve` the service with its own params file and feedback log; returns once /readyz answers."""
    feedback_log = root / f"{name}-feedback.db"
    params = root / f"{name}-params.yaml"
    params.write_text(yaml.safe_dump({"registry": registry.model_dump(),
                                      "serve": {"feedback_log": str(feedback_log), "max_k": 50,
                                                "max_payload_bytes": 20_000}}))
    port = free_port()
    log = root / f"{name}-server.log"
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "RECLOOP_PARAMS": str(params),
           "RECLOOP_RELOAD_TOKEN": TOKEN, "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BENTOML), "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, params, feedback_log, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill(signal.SIGKILL)
    pytest.fail(f"bentoml serve was not ready after {READY_TIMEOUT}s:\n{log.read_text()[-3000:]}")


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
    from components.registry.bento import import_champion
    from components.registry.package import package
    from components.registry.registry import promote

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
