"""The full `recloop` command: the stage commands of components/cli.py plus the Prefect flows' doors.

components/ never imports flows/, so the flow commands join the group here, and the console script
`recloop` points at this module (`python -m components.cli` is the stages alone, what torchrun runs).
"""
from __future__ import annotations

import click

from components.cli import cli, with_params
from components.config import Params
from components.errors import RecloopError


def _params_source() -> tuple[str, list[str]]:
    """This command's --params file and --set overrides: flows take these, so deployments re-read params."""
    given = click.get_current_context().params
    return str(given["params_path"]), list(given["overrides"])


@cli.command()
@click.option("--target", default=None, metavar="STAGE",
              help="Run this stage and the stages it needs (as `dvc repro STAGE`); default: all.")
@with_params
def pipeline(params: Params, target: str | None) -> None:
    """Run the training pipeline once as a Prefect flow whose tasks run `dvc repro --single-item <stage>`.

    DVC skips unchanged stages and records what it ran in dvc.lock and its cache, exactly as `dvc repro`
    does; the flow adds retries, a run in the Prefect UI and its metrics and report artifacts.
    It runs with params.yaml, as DVC does: change that file (or use `dvc exp run -S`) rather than --set.
    """
    from flows.local_api import patient_local_api
    from flows.repro import check_dvc_params
    from flows.stage_runs import MAIN, describe_outcomes
    from flows.training import training_pipeline

    check_dvc_params(*_params_source())  # before a Prefect server starts for nothing
    with patient_local_api():
        outcomes = training_pipeline(*_params_source(), target=target)
    click.echo(describe_outcomes({MAIN: outcomes}))


@cli.command()
@click.option("--target", default="split", show_default=True, metavar="STAGE",
              help="The last stage to run for each dataset.")
@with_params
def prepare(params: Params, target: str) -> None:
    """Ingest, validate and split every dataset in orchestrate.datasets in parallel, on a Dask cluster.

    These datasets' folders are not declared in dvc.yaml: the stages run directly (always), and
    dvc.lock does not record them.
    """
    from flows.fanout import prepare_datasets
    from flows.local_api import patient_local_api
    from flows.stage_runs import describe_outcomes

    with patient_local_api():
        outcomes = prepare_datasets(*_params_source(), target=target)
    click.echo(describe_outcomes(outcomes))


@cli.command("foundation-pipeline")
@click.option("--prepare/--no-prepare", default=True, show_default=True,
              help="Prepare the datasets of orchestrate.datasets (up to featurize) before pretraining.")
@with_params
def foundation_pipeline(params: Params, prepare: bool) -> None:
    """Prepare the foundation's sources in parallel on Dask, then pretrain and register the foundation through
    DVC (`dvc repro pipelines/foundation/dvc.yaml`), as a Prefect flow; see docs/transfer.md.

    It runs with params.yaml, as DVC does: change that file rather than --set.
    """
    from flows.foundation import foundation_pipeline as flow
    from flows.local_api import patient_local_api
    from flows.repro import check_dvc_params
    from flows.stage_runs import describe_outcomes

    check_dvc_params(*_params_source())  # before a Prefect server starts for nothing
    with patient_local_api():
        outcomes = flow(*_params_source(), prepare=prepare)
    click.echo(describe_outcomes(outcomes))


@cli.command()
@click.option("--work-pool", default=None, metavar="POOL",
              help="Create the deployments on this Prefect work pool instead of serving them here.")
@click.option("--image", default=None, metavar="IMAGE",
              help="With --work-pool (Docker, Kubernetes): a prebuilt image with recloop and the project in it.")
@with_params
def deploy(params: Params, work_pool: str | None, image: str | None) -> None:
    """Serve the Prefect deployments (schedules from orchestrate in params) until stopped; see docs/operations.md.

    It first says which deployments it serves and which it left out, with the param that enables each.
    """
    from flows.deployments import deploy_to_work_pool, plan_deployments, serve_deployments

    if image and not work_pool:
        raise RecloopError("--image goes with --work-pool: served deployments run here, in this environment")
    click.echo(plan_deployments(*_params_source()).describe())
    if work_pool:
        ids = deploy_to_work_pool(work_pool, image, *_params_source())
        click.echo(f"created {len(ids)} deployments on work pool {work_pool}: start a worker with "
                   f"`prefect worker start --pool {work_pool}`")
    else:
        serve_deployments(*_params_source())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
