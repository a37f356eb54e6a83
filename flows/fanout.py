"""Fan-out on Dask: the datasets listed in `orchestrate.datasets` go through ingest -> validate -> split side by side.

Each dataset is the main params with its own ingest section (and optionally validate/split sections)
and its own folders, and runs the stage table's compositions (components/stages.py) in a task each.
dvc.yaml declares the main pipeline's folders only, so these stages are not DVC's: they run every
time, and dvc.lock holds no record of them.
The Dask cluster is a local one by default, or the running scheduler at `orchestrate.dask_address`.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect_dask import DaskTaskRunner

from components.config import DatasetConfig, OrchestrateConfig, Params, load_params
from components.errors import RecloopError
from flows.artifacts import publish
from flows.dvcfile import load_stages, plan
from flows.stage_runs import Job, StageOutcome, run_jobs

DATASETS_ROOT = Path("data/datasets")


def dataset_params(params: Params, dataset: DatasetConfig) -> Params:
    """The params a dataset's stages run with: its sections where it has them, its own folders."""
    root = dataset.root or DATASETS_ROOT / dataset.name
    paths = params.paths.model_copy(update={
        "canonical": root / "canonical", "validated": root / "validated", "split": root / "split",
        "features": root / "features", "reports": root / "reports"})
    return params.model_copy(update={
        "paths": paths, "ingest": dataset.ingest,
        "validate_": dataset.validate_ or params.validate_, "split": dataset.split or params.split})


def dask_runner(cfg: OrchestrateConfig) -> DaskTaskRunner:
    """A runner on the Dask scheduler at `dask_address`, or on a local cluster started for the flow run."""
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    # One thread per worker: the stages are pandas/numpy-heavy and would fight over a worker's GIL.
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.dask_workers, "processes": cfg.dask_processes,
                                          "threads_per_worker": 1})


@flow(name="prepare-datasets")
def prepare_datasets(params_path: str = "params.yaml", overrides: list[str] | None = None,
                     target: str = "split") -> dict[str, list[StageOutcome]]:
    """Run `target` and what it needs for every dataset in `orchestrate.datasets`, in parallel on Dask.

    The task runner depends on params read at run time, so this flow picks it and runs the work as a
    subflow on it: a deployment on any work pool gets the Dask cluster its params.yaml names.
    """
    params = load_params(params_path, overrides or [])
    if not params.orchestrate.datasets:
        raise RecloopError("orchestrate.datasets is empty: list the datasets to prepare in params.yaml "
                           "(each a name and an ingest section)")
    on_dask = _prepare_on_dask.with_options(task_runner=dask_runner(params.orchestrate))
    return on_dask(params_path, overrides or [], target)


@flow(name="prepare-datasets-on-dask")
def _prepare_on_dask(params_path: str, overrides: list[str], target: str) -> dict[str, list[StageOutcome]]:
    params = load_params(params_path, overrides)
    jobs = {}
    for dataset in params.orchestrate.datasets:
        dataset_run = dataset_params(params, dataset)
        jobs[dataset.name] = Job(dataset_run, plan(load_stages(dataset_run), target), through_dvc=False)
    outcomes = run_jobs(jobs, params.orchestrate)
    publish("datasets", "recloop datasets", jobs, outcomes)
    return outcomes
