"""MLflow tracking, one way for every stage: metric keys, experiments, provenance tags, and one run per stage.

Every run recloop creates carries `run_tags()`: the git commit it ran from, whether the work tree
had uncommitted changes, and the DVC experiment when it ran under `dvc exp run`, so a number in
the MLflow UI leads back to the code and the experiment that made it.

`Tracker` uses an `MlflowClient` with an explicit URI rather than mlflow's module-level state, so
that nothing global changes on import and two stages in one process cannot log into each other's run.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from components.config import TrackingConfig
from components.errors import RecloopError

# MLflow's own tag for the commit: its UI shows it as the run's source version.
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_DIRTY_TAG = "git.dirty"
# The environment `dvc exp run` gives each stage's command (dvc/env.py), and the tag each becomes.
DVC_EXPERIMENT_TAGS = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.exp_baseline_rev"}


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits and _-./ space: `valid_ndcg@10` becomes `valid_ndcg_at_10`."""
    return re.sub(r"[^\w.\-/ ]", "_", name.replace("@", "_at_"))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"dim": 64}} -> {"model.dim": "64"} for MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, created (with `artifact_location`, when given) if it does not exist."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def run_tags(cwd: Path | str | None = None) -> dict[str, str]:
    """Provenance tags for a new run: git commit and dirty flag (when `cwd` is in a git work tree), DVC experiment."""
    tags = {tag: os.environ[var] for var, tag in DVC_EXPERIMENT_TAGS.items() if os.environ.get(var)}
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit:
        tags[GIT_COMMIT_TAG] = commit
        # Untracked files (DVC outputs, caches) do not change what the code computes.
        changes = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        tags[GIT_DIRTY_TAG] = "true" if changes else "false"
    return tags


def _git(args: list[str], cwd: Path | str | None) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or not a work tree (an installed package, a container): no tag
    return done.stdout.strip()


def create_run(client, experiment: str, run_name: str, tags: dict[str, str] | None = None):
    """A new run in `experiment` (created when missing) carrying `run_tags()` and `tags`."""
    return client.create_run(ensure_experiment(client, experiment), run_name=run_name,
                             tags={**run_tags(), **(tags or {})})


class Tracker:
    """Logs one stage's params, per-epoch metrics and artifacts; every method is a no-op when disabled."""

    def __init__(self, cfg: TrackingConfig | None, run_name: str, enabled: bool = True):
        self.uri = cfg.uri if cfg is not None else None
        self.experiment = cfg.experiment if cfg is not None else ""
        self.run_name = run_name
        self.enabled = enabled and self.uri is not None
        self.run_id: str | None = None
        self._client = None

    def start(self, run_id: str | None = None) -> str | None:
        """Open a new run, or reopen `run_id` (a resumed stage keeps logging into its run)."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            self._client = MlflowClient(tracking_uri=self.uri)
            if run_id is not None:
                try:
                    self._client.update_run(run_id, status="RUNNING")
                    self.run_id = run_id
                    return run_id
                except MlflowException:
                    pass  # the run is gone (another store?): log the rest into a new one
            self.run_id = create_run(self._client, self.experiment, self.run_name).info.run_id
        except (MlflowException, OSError) as e:  # an unreachable server or a broken store: say which
            raise RecloopError(f"MLflow tracking at {self.uri!r} failed ({e}); fix tracking.uri "
                               "or set tracking.uri=null to train without tracking") from None
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Param

        # MLflow takes at most 100 params per batch and 6000 characters per value.
        entries = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(entries), 100):
            self._client.log_batch(self.run_id, params=entries[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
        self._client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        if self.run_id is not None:
            self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run: FINISHED, or KILLED for a run stopped to be resumed later."""
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)
