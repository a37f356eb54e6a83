"""The training pipeline as a Prefect flow: the dvc.yaml stages in order, each run by `dvc repro`."""
from __future__ import annotations

from prefect import flow

from components.config import load_params
from flows.artifacts import publish
from flows.dvcfile import load_stages, plan
from flows.repro import check_dvc_params
from flows.stage_runs import MAIN, Job, StageOutcome, run_jobs


@flow(name="training-pipeline")
def training_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None,
                      target: str | None = None) -> list[StageOutcome]:
    """Run the pipeline's stages (all, or `target` and what it needs) through DVC, one task per stage.

    DVC runs each stage with params.yaml as it is on the day (so a deployment follows the file), skips
    those it finds unchanged, and records the rest in dvc.lock; `params_path` must be that file and
    `overrides` empty, for DVC reads nothing else.
    """
    check_dvc_params(params_path, overrides)
    params = load_params(params_path)
    job = Job(params, plan(load_stages(params), target), through_dvc=True)
    outcomes = run_jobs({MAIN: job}, params.orchestrate)
    publish("training", "recloop training pipeline", {MAIN: job}, outcomes)
    return outcomes[MAIN]
