"""Throwaway copies of the checkout for the flow tests, set to small MovieLens slices."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# Users 1-10 of the embedded MovieLens latest-small (1,259 ratings, 971 movies) and users 11-16 (408, 344).
SLICE_A = "tests/fixtures/ml-latest-u1-10"
SLICE_B = "tests/fixtures/ml-latest-u11-16"
# The stages both doors run in the tests: everything up to the trained model (a tiny one, one epoch).
TARGET = "finetune"


def copy_checkout(dest: Path) -> Path:
    """The files git sees (tracked, and new ones not ignored) in a fresh git repository: a checkout
    without outputs or caches, where DVC (which wants git) runs as in a clone."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listing.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The `dvc` command, as a user runs it in that checkout."""
    return subprocess.run(["dvc", *args], cwd=repo, env=tool_env(), capture_output=True, text=True)


def lock_entries(repo: Path) -> dict[str, Any]:
    """dvc.lock's record of each stage."""
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def set_params(repo: Path, updates: dict[str, Any]) -> None:
    """Set dotted keys in a copy's params.yaml (the file both `dvc repro` and the flows read)."""
    path = repo / "params.yaml"
    tree = yaml.safe_load(path.read_text())
    for key, value in updates.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def slice_params(embedding_cache: Path) -> dict[str, Any]:
    """The pipeline on slice B: its 344 movies keep the text encoder's cold run short, and a tiny model
    trained for one epoch keeps pretrain and finetune to a second each."""
    return {"ingest.path": SLICE_B, "validate.min_interactions": 100, "validate.min_users": 5,
            # One embedding cache for every copy: the text encoder runs once per session, not once per copy.
            "featurize.cache_dir": str(embedding_cache),
            "model.dim": 16, "model.layers": 1, "model.max_len": 10, "model.text_hidden": 32,
            "pretrain.epochs": 1, "pretrain.threads": 1, "finetune.epochs": 1, "finetune.threads": 1,
            "tracking.uri": None}


def tool_env() -> dict[str, str]:
    """Environment for `dvc repro`: the venv's `recloop` on PATH, no network."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def file_stamps(root: Path, folders: list[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under `folders`: tells whether a run rewrote anything."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in folders for p in sorted((root / folder).rglob("*")) if p.is_file()}
