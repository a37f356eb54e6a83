"""Thin MLflow helpers: one run per stage, resumable by id, silent when tracking is off.

Uses `MlflowClient` with an explicit URI rather than mlflow's module-level state, so that nothing
global changes on import and two stages in one process cannot log into each other's run.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

from components.config import TrackingConfig
from components.errors import RecloopError


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
            experiment = self._client.get_experiment_by_name(self.experiment)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self._client.create_experiment(self.experiment))
            self.run_id = self._client.create_run(experiment_id, run_name=self.run_name).info.run_id
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
