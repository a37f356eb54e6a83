"""Helpers of the serving tests: a tiny but real recloop model (20 MovieLens users, two epochs) and a
real `bentoml serve` on a free localhost port, started and killed with its whole process tree."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
import torch
import yaml

from components.config import (
    FeaturizeConfig,
    FinetuneConfig,
    ModelConfig,
    RegistryConfig,
    SplitConfig,
)
from components.data.dataset import SplitData
from components.data.split import split
from components.features.featurize import featurize, load_item_text
from components.models.artifacts import save_trained
from components.registry.registry import promote
from components.serving.bento import import_champion
from components.training.finetune import finetune_model

RAW = Path(__file__).parents[2] / "data" / "raw" / "ml-latest-small"
USERS = 20
MIN_RATERS = 3


def write_canonical(folder: Path) -> Path:
    """Ratings of the first USERS users on movies at least MIN_RATERS of them rated, as canonical tables."""
    ratings = pd.read_csv(RAW / "ratings.csv")
    ratings = ratings[ratings["userId"] <= USERS]
    raters = ratings["movieId"].value_counts()
    ratings = ratings[ratings["movieId"].isin(raters.index[raters >= MIN_RATERS])]
    movies = pd.read_csv(RAW / "movies.csv")
    movies = movies[movies["movieId"].isin(ratings["movieId"])]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": ratings["userId"].astype(str), "item_id": ratings["movieId"].astype(str),
                  "timestamp": ratings["timestamp"].astype("int64"), "event": "rate",
                  "value": ratings["rating"].astype(float), "domain": "movies"}
                 ).to_parquet(folder / "interactions.parquet", index=False)
    pd.DataFrame({"item_id": movies["movieId"].astype(str), "title": movies["title"], "text": "",
                  "categories": movies["genres"].str.split("|"), "domain": "movies"}
                 ).to_parquet(folder / "items.parquet", index=False)
    pd.DataFrame({"user_id": ratings["userId"].astype(str).unique()}).to_parquet(folder / "users.parquet", index=False)
    return folder


def train_tiny(root: Path, seed: int = 0, epochs: int = 2) -> dict[str, Path]:
    """canonical -> split -> item text vectors -> a fine-tuned model folder; returns the folders."""
    paths = {name: root / name for name in ("validated", "split", "reports", "features", "finetuned")}
    if not (paths["split"] / "train.parquet").exists():
        write_canonical(paths["validated"])
        split(SplitConfig(min_user_interactions=5, cold_item_fraction=0.05), paths["validated"], paths["split"],
              paths["reports"], seed=42)
        featurize(FeaturizeConfig(cache_dir=root / "cache"), paths["split"], paths["features"])
    torch.manual_seed(seed)
    data = SplitData.load(paths["split"])
    text = load_item_text(paths["features"], data.n_items)
    knobs = ModelConfig(dim=16, layers=1, heads=1, max_len=20, text_hidden=32, dropout=0.1)
    trained, result = finetune_model(data, text, FinetuneConfig(epochs=epochs, batch_size=32, patience=5), seed,
                                     pretrained=None, knobs=knobs)
    save_trained(trained, paths["finetuned"], {"valid_ndcg@10": result.best_metrics.get("valid_ndcg@10", 0.0),
                                               "seed": seed})
    return paths


def horror_likes(bundle, user: str, n: int, start: int) -> list[dict]:
    """`n` like events on horror films `user` has not seen, a minute apart from `start`."""
    seen = set(bundle.histories.loc[bundle.histories["user_id"] == user, "item_id"])
    horror = [i for i, cats in zip(bundle.items["item_id"], bundle.items["categories"])
              if "Horror" in cats and i not in seen]
    assert len(horror) >= n, "the tiny catalog holds enough unseen horror films"
    return [{"user_id": user, "item_id": item, "event": "like", "timestamp": start + 60 * j}
            for j, item in enumerate(horror[:n])]


def stored_events(bundle, user: str) -> list[dict]:
    """The user's stored history as ad-hoc history events."""
    stored = bundle.histories[bundle.histories["user_id"] == user]
    return [{"item_id": r.item_id, "timestamp": int(r.timestamp), "event": r.event, "value": float(r.value),
             "domain": r.domain} for r in stored.itertuples()]


def history_with_likes(bundle, user: str, likes: list[dict]) -> list[dict]:
    """The ad-hoc history equal to `user`'s stored history followed by `likes` (what fresh state must answer)."""
    return stored_events(bundle, user) + [
        {"item_id": e["item_id"], "timestamp": e["timestamp"], "event": "like", "value": 1.0} for e in likes]


def post(url: str, path: str, body: dict) -> dict:
    """One request on a new connection (each connection may land on either worker); must answer 200."""
    response = httpx.post(url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def listed(answer: dict) -> list[str]:
    return [i["item_id"] for i in answer["items"]]


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


def end_switch(stop: threading.Event, threads: list[threading.Thread], registry: RegistryConfig,
               champion: int) -> None:
    """Stop a switch test's load threads and give the session its champion back, also as BentoML's latest
    import (servers imported the new version, and a server started later serves the latest import)."""
    stop.set()
    for t in threads:
        t.join()
    promote(registry, champion)
    import_champion(registry)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, name: str, registry: RegistryConfig, bentoml_home: Path, **serve) -> Server:
    """`bentoml serve` the service with its own params file and feedback log; returns once /readyz answers.

    `serve` overrides params' serve section; the champion watch is off unless asked for, so a test's
    promotion reaches the server only when the test says so (/reload).
    """
    feedback_log = root / f"{name}-feedback.db"
    params = root / f"{name}-params.yaml"
    params.write_text(yaml.safe_dump({"registry": registry.model_dump(),
                                      "serve": {"feedback_log": str(feedback_log), "max_k": 50,
                                                "max_payload_bytes": 20_000, "watch_seconds": 0, **serve}}))
    port = free_port()
    log = root / f"{name}-server.log"
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "RECLOOP_PARAMS": str(params),
           "RECLOOP_RELOAD_TOKEN": TOKEN, "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # log lines reach the file as they are written
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
