"""Foundations in the MLflow registry: each one a version of its own registered model, fetched back by URI.

A foundation is not a served model, so it is logged as plain artifacts (the foundation folder) and
its version is created straight from the run that holds them (MLflow's `register_model` wants an
MLflow model); `recloop transfer` reads `transfer.foundation` as a folder
or as `models:/<name>/<version>`, `models:/<name>/latest` (the newest) or `models:/<name>@<alias>`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from components.config import RegistryConfig
from components.errors import RecloopError
from components.registry.registry import _artifact_location, client, using_store
from components.tracking import ensure_experiment, metric_key, run_tags

ARTIFACT_PATH = "foundation"


def register_foundation(cfg: RegistryConfig, name: str, foundation_dir: Path,
                        metrics: dict[str, float] | None = None) -> int:
    """Log `foundation_dir` in a run of the registry's experiment and register it as a new version of `name`
    (`models:/<name>/latest` is always the newest). Returns the version number."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    try:
        experiment_id = ensure_experiment(mlflow_client, cfg.experiment, _artifact_location(cfg))
    except Exception as e:  # an unreachable server or a broken store: say which
        raise RecloopError(f"the MLflow registry at {cfg.uri!r} cannot be used ({e}): fix registry.uri") from None
    numbers = {metric_key(k): float(v) for k, v in (metrics or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with using_store(cfg), mlflow.start_run(experiment_id=experiment_id, run_name="foundation",
                                            tags=run_tags()) as run:
        mlflow.log_metrics(numbers)
        mlflow.log_artifacts(str(foundation_dir), ARTIFACT_PATH)
        source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    # Not an MLflow model (nothing serves it): a version made straight from the run's artifacts.
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name, tags={"kind": "foundation"})
    version = int(mlflow_client.create_model_version(name, source, run_id=run.info.run_id,
                                                     tags={"kind": "foundation"}).version)
    return version


def foundation_folder(cfg: RegistryConfig, spec: str, into: Path | None = None) -> Path:
    """The local folder of a foundation named by `spec`: a path as it is, a `models:/` URI downloaded."""
    if not spec.startswith("models:/"):
        return Path(spec)
    import mlflow

    into = Path(into or tempfile.mkdtemp(prefix="recloop-foundation-"))
    try:
        with using_store(cfg):
            local = mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(into))
    except Exception as e:  # an unknown name, version or alias, or an unreachable store: say which
        raise RecloopError(f"cannot fetch the foundation {spec!r} from the registry at {cfg.uri!r} ({e}); "
                           "`recloop foundation` with foundation.registered_model set registers one") from None
    return Path(local)
