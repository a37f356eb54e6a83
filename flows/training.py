"""The training pipeline as a Prefect flow: the dvc.yaml stages in order, each skipped when unchanged."""
from __future__ import annotations

from prefect import flow

from components.config import load_params
from flows.artifacts import publish
from flows.stage_runs import MAIN, Job, StageOutcome, run_jobs
from flows.stages import load_stages, plan


@flow(name="training-pipeline")
def training_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None,
                      target: str | None = None) -> list[StageOutcome]:
    """Run the pipeline's stages (all, or `target` and what it needs) with params read now from `params_path`.

    Takes a file and overrides rather than the params themselves, so that a deployment reads the
    params.yaml of the day on every scheduled run.
    """
    params = load_params(params_path, overrides or [])
    job = Job(params, plan(load_stages(params), target))
    outcomes = run_jobs({MAIN: job}, params.orchestrate)
    publish("training", "recloop training pipeline", {MAIN: job}, outcomes)
    return outcomes[MAIN]
