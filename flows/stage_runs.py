"""The one Prefect task that runs a stage, its cache key, and the loop that runs stages for one or many datasets.

Tasks pass paths and content hashes, never tables: a stage task gets the hashes of its inputs and
returns the hashes of what it wrote. Its cache key is hash(the params keys it reads + its input hashes
+ its output paths + its code), and the code is in the key twice over: dvc.yaml lists each stage's
source files among its deps, and the key covers the call's own source. So a stage whose inputs, params
and code are unchanged is a cache hit and does not run, exactly when `dvc repro` would skip it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.futures import wait
from prefect.states import State

from components.config import OrchestrateConfig, Params
from components.errors import RecloopError
from flows.hashes import content_hash, content_hashes, value_hash
from flows.stages import Stage, read_params_keys


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """hash(params keys the stage reads + content hashes of its inputs + its output paths + its code)."""
    stage: Stage = parameters["stage"]
    return value_hash({
        "stage": stage.name,
        "params": read_params_keys(parameters["params"], stage.params),
        "deps": parameters["deps"],
        "outputs": stage.outputs,
        "call": inspect.getsource(stage.call),
    })


def _worth_retrying(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry passing failures only: bad data or params (RecloopError) fail the same way every time."""
    try:
        state.result()
    except RecloopError:
        return False
    except Exception:
        return True
    return False


@task(cache_key_fn=stage_cache_key, persist_result=True, result_serializer="json",
      retry_condition_fn=_worth_retrying)
def run_stage(stage: Stage, params: Params, deps: dict[str, str]) -> dict[str, str]:
    """Run one stage's library call; return the content hashes of everything it wrote.

    `deps` (the content hashes of the stage's inputs) is not read here: the cache key covers it, and
    the Prefect UI shows with it exactly what the run consumed.
    """
    summary = stage.call(params)
    get_run_logger().info(summary.describe())
    return content_hashes(stage.outputs)


@dataclass
class StageOutcome:
    stage: str
    cached: bool  # skipped: an identical run (same params, inputs and code) was already recorded
    outputs: dict[str, str]  # output path -> content hash


# The name of the training pipeline's single job: its task runs and lines are named by stage alone.
MAIN = ""


@dataclass
class Job:
    """One dataset's way through the pipeline: its params, and the stages to run in order."""

    params: Params
    stages: list[Stage]


def _submit(name: str, job: Job, stage: Stage, known: dict[str, str], cfg: OrchestrateConfig,
            refresh: bool = False) -> Any:
    # Inputs written earlier in this run are not hashed again; the rest (raw data, code) are hashed now.
    deps = {d: known.get(d) or content_hash(d) for d in stage.deps}
    options = dict(task_run_name=f"{name}/{stage.name}" if name else stage.name,
                   result_storage=Path(cfg.cache_dir).resolve(), refresh_cache=refresh or None)
    if stage.transient:
        options.update(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_seconds)
    return run_stage.with_options(**options).submit(stage, job.params, deps)


def run_jobs(jobs: dict[str, Job], cfg: OrchestrateConfig) -> dict[str, list[StageOutcome]]:
    """Run every job's stages in order; jobs run side by side on the flow's task runner, stage by stage.

    A cache hit whose outputs were changed since (another `dvc repro`, a hand-run `recloop` stage,
    deleted files) is run again and its record refreshed: a skipped stage always leaves on disk what
    its record says. A job that fails stops there; the others go on, then the first failure is raised.
    """
    logger = get_run_logger()
    known: dict[str, dict[str, str]] = {name: {} for name in jobs}
    outcomes: dict[str, list[StageOutcome]] = {name: [] for name in jobs}
    failed: dict[str, BaseException] = {}
    for step in range(max((len(j.stages) for j in jobs.values()), default=0)):
        wave = {name: job.stages[step] for name, job in jobs.items()
                if step < len(job.stages) and name not in failed}
        futures = {name: _submit(name, jobs[name], stage, known[name], cfg) for name, stage in wave.items()}
        wait(list(futures.values()))
        for name, future in futures.items():
            stage = wave[name]
            if future.state.is_completed() and future.state.name == "Cached":
                if content_hashes(stage.outputs) == future.result():
                    known[name].update(future.result())
                    outcomes[name].append(StageOutcome(stage.name, True, future.result()))
                    continue
                logger.warning("%s: the outputs of %s changed since its recorded run: running it again",
                               name or "pipeline", stage.name)
                future = _submit(name, jobs[name], stage, known[name], cfg, refresh=True)
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                logger.error("%s: stage %s failed: %s", name or "pipeline", stage.name, result)
                failed[name] = result
                continue
            known[name].update(result)
            outcomes[name].append(StageOutcome(stage.name, False, result))
    if failed:
        raise next(iter(failed.values()))
    return outcomes


def describe_outcomes(outcomes: dict[str, list[StageOutcome]]) -> str:
    """One line per stage run: ran or skipped, and where its outputs are."""
    lines = []
    for name, stages in outcomes.items():
        for o in stages:
            what = "skipped (unchanged)" if o.cached else "ran"
            lines.append(f"{name + '/' if name else ''}{o.stage}: {what} -> {', '.join(o.outputs)}")
    return "\n".join(lines)
