"""The served deployments and their schedules (from `orchestrate` in params.yaml): what `recloop deploy` runs.

Each deployment passes the params file and overrides, not the params themselves, so a scheduled run
reads params.yaml as it is on that day. Entrypoints are module paths (`flows.training.training_pipeline`):
a worker on a work pool imports them from the installed package, wherever its working directory is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow, deploy, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from components.config import load_params
from components.errors import RecloopError
from flows.continual import monitor_flow, retrain_flow, retrain_trigger
from flows.fanout import prepare_datasets
from flows.training import training_pipeline

# Deployment name -> flow. A deployment is served when its flow has work to do with these params.
FLOWS: dict[str, Flow] = {
    "training": training_pipeline,
    "datasets": prepare_datasets,
    # The continual loop: monitor on a schedule; retrain on the monitor's drift event (and any schedule).
    "monitor": monitor_flow,
    "retrain": retrain_flow,
}
# Flows that only have work when the split cuts live windows (split.time.cutoff).
LIVE_FLOWS = {"monitor", "retrain"}


def build_deployments(params_path: str = "params.yaml", overrides: list[str] | None = None,
                      job_variables: dict[str, Any] | None = None) -> list[RunnerDeployment]:
    """One deployment per flow, with the cron schedule (in `orchestrate.timezone`) params give it, if any.

    `job_variables` go to the work pool's job template (e.g. a process pool's `working_dir`).
    """
    overrides = list(overrides or [])
    params = load_params(params_path, overrides)
    cfg = params.orchestrate
    unknown = sorted(set(cfg.schedules) - set(FLOWS))
    if unknown:
        raise RecloopError(f"orchestrate.schedules names {', '.join(unknown)}, which are not deployments; "
                           f"deployments: {', '.join(FLOWS)}")
    deployments = []
    for name, flow in FLOWS.items():
        if name == "datasets" and not cfg.datasets:
            continue
        if name in LIVE_FLOWS and params.split.time.cutoff is None:
            continue
        cron = cfg.schedules.get(name)
        try:
            schedules = [Cron(cron, timezone=cfg.timezone)] if cron else []
        except ValueError as e:
            raise RecloopError(f"orchestrate.schedules.{name}: {cron!r} is not a cron expression ({e})") from None
        deployments.append(flow.to_deployment(
            name=name, schedules=schedules, tags=["recloop"],
            triggers=[retrain_trigger(params.monitor.project, str(params_path), overrides)] if name == "retrain" else None,
            parameters={"params_path": str(params_path), "overrides": overrides},
            job_variables=job_variables, entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def _require_server() -> None:
    if not PREFECT_API_URL.value():
        # Prefect's temporary server runs no scheduler: schedules would silently never fire.
        raise RecloopError("deployments need a running Prefect server: start one with "
                           "`prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`")


def serve_deployments(params_path: str = "params.yaml", overrides: list[str] | None = None) -> None:
    """Register the deployments with the Prefect API (PREFECT_API_URL) and run their flow runs here until stopped."""
    _require_server()
    serve(*build_deployments(params_path, overrides))


def deploy_to_work_pool(work_pool: str, image: str | None = None, params_path: str = "params.yaml",
                        overrides: list[str] | None = None) -> list[UUID]:
    """Create the same deployments on a work pool, whose workers then run them (nothing is served here).

    Docker and Kubernetes pools: `image` is a prebuilt image with recloop installed and the project
    (params.yaml, dvc.yaml) in its working directory; nothing is built or pushed here. Process pools
    (no image): the worker runs the flows in this checkout, so it must be on the same machine or disk.
    """
    _require_server()
    job_variables = None if image else {"working_dir": str(Path.cwd())}
    try:
        return deploy(*build_deployments(params_path, overrides, job_variables), work_pool_name=work_pool,
                      image=image, build=False, push=False, print_next_steps_message=False,
                      ignore_warnings=True)
    except ValueError as e:  # an unknown pool, an image on a pool that takes none
        raise RecloopError(f"cannot deploy to work pool {work_pool!r}: {e}") from None
