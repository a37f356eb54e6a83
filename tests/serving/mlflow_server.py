"""A real MLflow tracking server for tests and benchmarks: the registry over HTTP, as a deployment has it.

`mlflow server` on 127.0.0.1 and a free port, one worker, its SQLite store and the artifacts it serves
in a folder of its own. `kill()` is a crash (SIGKILL to the whole process tree); `start()` again brings
it back on the same port and store.
"""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil

MLFLOW = Path(__file__).parents[2] / ".venv" / "bin" / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`start()` (again after `kill()`), `uri`, `kill()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "mlflow-server.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts")],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"mlflow server not ready after {timeout}s:\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers, and wait until they are gone (the port is closed)."""
        if self.process is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
            for p in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(signal.SIGKILL)
            psutil.wait_procs(processes, timeout=30)
        self.process.wait(timeout=30)
        self.process = None
