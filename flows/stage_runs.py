"""The Prefect tasks that run a stage, and the loop that runs stages for one or many datasets.

The training pipeline's stage task runs the stage through DVC (flows/repro.py): DVC skips what did
not change and records what it built. The fan-out's datasets have folders dvc.yaml does not declare,
so their task calls the stage table directly: those stages always run, and dvc.lock does not hold them.
Transient stages are retried; a user's mistake (RecloopError, `recloop` exiting with 2) never is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.futures import wait
from prefect.states import State

from components.config import OrchestrateConfig, Params
from components.errors import RecloopError
from components.stages import STAGES
from flows.dvcfile import DvcStage
from flows.repro import recorded_outputs, reproduce


@dataclass
class StageOutcome:
    stage: str
    skipped: bool  # DVC found the stage unchanged (same params, inputs and code as dvc.lock records)
    outputs: dict[str, str | None]  # output path -> hash in dvc.lock (None: not recorded by DVC)


def _worth_retrying(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry passing failures only: bad data or params (RecloopError) fail the same way every time."""
    try:
        state.result()
    except RecloopError:
        return False
    except Exception:
        return True
    return False


# DVC is the one cache of stage results: Prefect caches nothing.
@task(retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE)
def repro_stage(stage: DvcStage) -> StageOutcome:
    """`dvc repro --single-item <stage>`: run it if DVC finds it changed; dvc.lock records the result."""
    ran = reproduce(stage.name)
    outputs = recorded_outputs(stage.name)
    get_run_logger().info("%s: %s", stage.name, "ran" if ran else "skipped (unchanged)")
    return StageOutcome(stage.name, not ran, outputs)


@task(retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE)
def run_stage(stage: DvcStage, params: Params) -> StageOutcome:
    """Run the stage table's composition in this process, with these params (no DVC, no skipping)."""
    summary = STAGES[stage.name].run(params)
    get_run_logger().info(summary.describe())
    return StageOutcome(stage.name, False, dict.fromkeys(stage.outputs))


# The name of the training pipeline's single job: its task runs and lines are named by stage alone.
MAIN = ""


@dataclass
class Job:
    """One dataset's way through the pipeline: its params, and the stages to run in order."""

    params: Params
    stages: list[DvcStage]
    through_dvc: bool  # run by `dvc repro` (the main pipeline) or by the stage table (fan-out datasets)


def _submit(name: str, job: Job, stage: DvcStage, cfg: OrchestrateConfig) -> Any:
    options: dict[str, Any] = dict(task_run_name=f"{name}/{stage.name}" if name else stage.name)
    if STAGES[stage.name].transient:
        options.update(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_seconds)
    if job.through_dvc:
        return repro_stage.with_options(**options).submit(stage)
    return run_stage.with_options(**options).submit(stage, job.params)


def run_jobs(jobs: dict[str, Job], cfg: OrchestrateConfig) -> dict[str, list[StageOutcome]]:
    """Run every job's stages in order; jobs run side by side on the flow's task runner, stage by stage.

    A job that fails stops there; the others go on, then the first failure is raised.
    """
    logger = get_run_logger()
    outcomes: dict[str, list[StageOutcome]] = {name: [] for name in jobs}
    failed: dict[str, BaseException] = {}
    for step in range(max((len(j.stages) for j in jobs.values()), default=0)):
        wave = {name: job.stages[step] for name, job in jobs.items()
                if step < len(job.stages) and name not in failed}
        futures = {name: _submit(name, jobs[name], stage, cfg) for name, stage in wave.items()}
        wait(list(futures.values()))
        for name, future in futures.items():
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                logger.error("%s: stage %s failed: %s", name or "pipeline", wave[name].name, result)
                failed[name] = result
                continue
            outcomes[name].append(result)
    if failed:
        raise next(iter(failed.values()))
    return outcomes


def describe_outcomes(outcomes: dict[str, list[StageOutcome]]) -> str:
    """One line per stage: ran or skipped, and where its outputs are."""
    lines = []
    for name, stages in outcomes.items():
        for o in stages:
            what = "skipped (unchanged)" if o.skipped else "ran"
            lines.append(f"{name + '/' if name else ''}{o.stage}: {what} -> {', '.join(o.outputs)}")
    return "\n".join(lines)
