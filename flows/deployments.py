"""The served deployments and their schedules (from `orchestrate` in params.yaml): what `recloop deploy` runs.

Each deployment passes the params file and overrides, not the params themselves, so a scheduled run
reads params.yaml as it is on that day. Entrypoints are module paths (`flows.training.training_pipeline`):
a worker on a work pool imports them from the installed package, wherever its working directory is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow, deploy, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from components.config import Params, load_params
from components.errors import RecloopError
from flows.continual import monitor_flow, retrain_flow, retrain_trigger
from flows.fanout import prepare_datasets
from flows.repro import check_dvc_params
from flows.training import training_pipeline

# Deployment name -> flow.
FLOWS: dict[str, Flow] = {
    "training": training_pipeline,
    "datasets": prepare_datasets,
    # The continual loop: monitor on a schedule; retrain on the monitor's drift event (and any schedule).
    "monitor": monitor_flow,
    "retrain": retrain_flow,
}


@dataclass
class DeploymentPlan:
    """Which deployments these params give work to, with their schedules, and why the others are left out."""

    params: Params
    params_path: str
    overrides: list[str]
    served: dict[str, str | None]  # name -> cron (None: on demand only)
    skipped: dict[str, str]        # name -> why, and the param that enables it

    def describe(self) -> str:
        zone = self.params.orchestrate.timezone
        lines = [f"deployment {name}: served, " + (f"schedule `{cron}` ({zone})" if cron else "on demand")
                 + (" and on each drift event" if name == "retrain" else "")
                 for name, cron in self.served.items()]
        lines += [f"deployment {name}: skipped, {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _why_not(name: str, params: Params, params_path: str, overrides: list[str]) -> str | None:
    if name == "training":
        try:
            check_dvc_params(params_path, overrides)
        except RecloopError as e:
            return str(e)
    if name == "datasets" and not params.orchestrate.datasets:
        return "no datasets to prepare: list them in orchestrate.datasets"
    if name in ("monitor", "retrain") and params.split.time.cutoff is None:
        return ("no live windows to watch: set split.time.cutoff (e.g. split.time.cutoff: \"2015-01-01\") "
                "so that the split stage cuts them")
    return None


def plan_deployments(params_path: str = "params.yaml", overrides: list[str] | None = None) -> DeploymentPlan:
    """Sort the deployments into served and skipped (with the reason) for these params."""
    overrides = list(overrides or [])
    params = load_params(params_path, overrides)
    cfg = params.orchestrate
    unknown = sorted(set(cfg.schedules) - set(FLOWS))
    if unknown:
        raise RecloopError(f"orchestrate.schedules names {', '.join(unknown)}, which are not deployments; "
                           f"deployments: {', '.join(FLOWS)}")
    for name, cron in cfg.schedules.items():
        try:
            if cron:
                Cron(cron, timezone=cfg.timezone)
        except ValueError as e:
            raise RecloopError(f"orchestrate.schedules.{name}: {cron!r} is not a cron expression ({e})") from None
    served, skipped = {}, {}
    for name in FLOWS:
        why = _why_not(name, params, params_path, overrides)
        if why:
            skipped[name] = why
        else:
            served[name] = cfg.schedules.get(name)
    return DeploymentPlan(params, str(params_path), overrides, served, skipped)


def build_deployments(params_path: str = "params.yaml", overrides: list[str] | None = None,
                      job_variables: dict[str, Any] | None = None) -> list[RunnerDeployment]:
    """One deployment per flow with work to do, with the cron schedule (in `orchestrate.timezone`) params give it.

    `job_variables` go to the work pool's job template (e.g. a process pool's `working_dir`).
    """
    planned = plan_deployments(params_path, overrides)
    cfg, project = planned.params.orchestrate, planned.params.monitor.project
    deployments = []
    for name, cron in planned.served.items():
        schedules = [Cron(cron, timezone=cfg.timezone)] if cron else []
        trigger = [retrain_trigger(project, planned.params_path, planned.overrides)] if name == "retrain" else None
        deployments.append(FLOWS[name].to_deployment(
            name=name, schedules=schedules, tags=["recloop"], triggers=trigger,
            parameters={"params_path": planned.params_path, "overrides": planned.overrides},
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
