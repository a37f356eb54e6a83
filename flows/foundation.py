"""The foundation as a Prefect flow: its sources prepared side by side on Dask, then the foundation stage by DVC.

The sources are the datasets of `orchestrate.datasets`, prepared up to featurize by the fan-out
(flows/fanout.py) into data/datasets/<name>/, where `foundation.sources` names their split and
features folders. The foundation stage then runs as `dvc repro pipelines/foundation/dvc.yaml`
(the stage table's FOUNDATION_STAGES entry, `recloop foundation`): DVC skips it when nothing it
reads changed and records it in that pipeline's dvc.lock; the stage registers the foundation
when `foundation.registered_model` is set. `dvc repro` of the main pipeline never runs it.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import load_params
from components.errors import RecloopError
from flows.fanout import prepare_datasets
from flows.repro import check_dvc_params, recorded_outputs, reproduce
from flows.stage_runs import StageOutcome

FOUNDATION_PIPELINE = Path("pipelines/foundation/dvc.yaml")
# The sources must be featurized: the foundation reads their split and their item text vectors.
PREPARE_TARGET = "featurize"


# DVC is the one cache of stage results: Prefect caches nothing. Training failures repeat: no retries.
@task(cache_policy=NO_CACHE)
def repro_foundation() -> StageOutcome:
    """`dvc repro --single-item pipelines/foundation/dvc.yaml:foundation`; its dvc.lock records the result."""
    ran = reproduce(f"{FOUNDATION_PIPELINE}:foundation")
    get_run_logger().info("foundation: %s", "ran" if ran else "skipped (unchanged)")
    lock = FOUNDATION_PIPELINE.with_suffix(".lock")
    return StageOutcome("foundation", not ran, recorded_outputs("foundation", lock))


@flow(name="foundation-pipeline")
def foundation_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None,
                        prepare: bool = True) -> dict[str, list[StageOutcome]]:
    """Prepare every dataset of orchestrate.datasets up to featurize in parallel (unless `prepare` is false or
    none is listed), then pretrain the foundation on foundation.sources through DVC and register it.

    Like the training pipeline it runs with params.yaml as it is (DVC reads nothing else): no overrides.
    """
    check_dvc_params(params_path, overrides)
    params = load_params(params_path)
    if not params.foundation.sources:  # before minutes of preparing for a stage that cannot run
        raise RecloopError("foundation.sources is empty: list each catalog's split and features folders, e.g. "
                           "data/datasets/<name>/split and data/datasets/<name>/features (docs/transfer.md)")
    outcomes: dict[str, list[StageOutcome]] = {}
    if prepare and params.orchestrate.datasets:
        outcomes |= prepare_datasets(params_path, [], target=PREPARE_TARGET)
    outcomes["foundation"] = [repro_foundation()]
    return outcomes
