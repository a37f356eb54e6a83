"""The `recloop` command line: one subcommand per pipeline stage, each a thin door to a library function.

Every subcommand takes `--params FILE` and any number of `--set section.key=value` overrides.
User mistakes (bad params, malformed data, missing files) print one clear `error:` line and exit 2.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from components.config import Params, load_params
from components.errors import RecloopError


def _stage(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a subcommand the shared --params/--set options and turn RecloopError into a short message."""

    @click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path),
                  default=Path("params.yaml"), show_default=True, help="Parameters file.")
    @click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a parameter, e.g. --set split.max_history=50 (repeatable).")
    @functools.wraps(func)
    def wrapper(params_path: Path, overrides: tuple[str, ...], **kwargs: Any) -> None:
        try:
            params = load_params(params_path, overrides)
            func(params, **kwargs)
        except RecloopError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """recloop: language-model-powered sequential recommendation, from raw logs to a served, self-renewing model.

    Stages run in order: ingest -> validate -> split -> featurize -> pretrain -> finetune -> evaluate
    -> package. `dvc repro` runs them all, and so does `recloop pipeline` (as a Prefect flow).
    """


@cli.command()
@_stage
def ingest(params: Params) -> None:
    """Read the source named in params (ingest.source, ingest.path) into canonical Parquet tables."""
    from components.data.ingest import ingest as run

    click.echo(run(params.ingest, params.paths.canonical, params.paths.reports).describe())


@cli.command()
@_stage
def validate(params: Params) -> None:
    """Check the canonical tables with Great Expectations; quarantine bad rows with a reason."""
    from components.validation.validate import validate as run

    click.echo(run(params.validate_, params.paths.canonical, params.paths.validated, params.paths.reports).describe())


@cli.command()
@_stage
def split(params: Params) -> None:
    """Leave-one-out by time (or the source's own split), k-core filtering, cold-item holdout, live windows."""
    from components.data.split import split as run

    click.echo(run(params.split, params.paths.validated, params.paths.split, params.paths.reports,
                   params.seed).describe())


@cli.command()
@_stage
def featurize(params: Params) -> None:
    """Encode each item's text with the language model (cached by text hash) into item vectors."""
    from components.features.featurize import featurize as run

    click.echo(run(params.featurize, params.paths.split, params.paths.features).describe())


def _train(run, cfg, params: Params) -> None:
    """A training stage, in one process or as one rank of torchrun (only the main process reports)."""
    from components.training.distributed import process_group

    with process_group(cfg.device) as main:
        summary = run(params.model, cfg, params.tracking, params.paths.split, params.paths.features,
                      params.paths.models, params.paths.reports, params.seed)
    if main:
        click.echo(summary.describe())


@cli.command()
@_stage
def pretrain(params: Params) -> None:
    """Self-supervised pretraining: next item over the catalog + ID/text alignment; resumes from a checkpoint.

    Under `torchrun --nproc_per_node N -m components.cli pretrain` it trains with DDP on N processes.
    """
    from components.training.pretrain import pretrain as run

    _train(run, params.pretrain, params)


@cli.command()
@_stage
def finetune(params: Params) -> None:
    """Multi-task fine-tuning (retrieval, like, rating) from the pretrained weights; early stopping on NDCG@10.

    Under `torchrun --nproc_per_node N -m components.cli finetune` it trains with DDP on N processes.
    """
    from components.training.finetune import finetune as run

    _train(run, params.finetune, params)


@cli.command()
@_stage
def evaluate(params: Params) -> None:
    """Full-ranking evaluation of each model in evaluate.models on valid and test: metrics, slices, plots, report."""
    from components.evaluation.evaluate import evaluate as run

    click.echo(run(params.evaluate, params.paths.split, params.paths.features, params.paths.reports,
                   seed=params.seed, models_dir=params.paths.models, tracking_uri=params.tracking.uri).describe())


@cli.command()
@_stage
def package(params: Params) -> None:
    """Log the fine-tuned model and what serving needs to the MLflow registry as a new `challenger` version."""
    from components.registry.package import package as run

    click.echo(run(params.registry, params.paths).describe())


@cli.command()
@click.option("--version", "version", type=int, default=None, help="Make this version the champion "
              "(default: the challenger).")
@click.option("--rollback", is_flag=True, help="Give `champion` back to the version that held it before.")
@click.option("--list", "list_versions", is_flag=True, help="Show the registered versions and their aliases.")
@click.option("--bento/--no-bento", default=True, show_default=True,
              help="Import the new champion into BentoML's model store (what `bentoml serve`/`build` use).")
@_stage
def promote(params: Params, version: int | None, rollback: bool, list_versions: bool, bento: bool) -> None:
    """Move the registry's `champion` alias (to the challenger, to --version N, or back with --rollback)."""
    from components.registry import registry

    if list_versions:
        import time

        for v in registry.list_versions(params.registry):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"]))
            click.echo(f"version {v['version']:>3}  created {created}  {', '.join(v['aliases'])}")
        return
    if rollback and version is not None:
        raise RecloopError("give either --version N or --rollback, not both")
    done = registry.rollback(params.registry) if rollback else registry.promote(params.registry, version)
    click.echo(done.describe())
    if bento:
        from components.registry.bento import import_champion

        click.echo(import_champion(params.registry).describe())


def _params_source() -> tuple[str, list[str]]:
    """This command's --params file and --set overrides: flows take these, so deployments re-read params."""
    given = click.get_current_context().params
    return str(given["params_path"]), list(given["overrides"])


@cli.command()
@click.option("--target", default=None, metavar="STAGE",
              help="Run this stage and the stages it needs (as `dvc repro STAGE`); default: all.")
@_stage
def pipeline(params: Params, target: str | None) -> None:
    """Run the training pipeline once as a Prefect flow; stages with unchanged params, inputs and code are skipped."""
    from flows.local_api import patient_local_api
    from flows.stage_runs import MAIN, describe_outcomes
    from flows.training import training_pipeline

    with patient_local_api():
        outcomes = training_pipeline(*_params_source(), target=target)
    click.echo(describe_outcomes({MAIN: outcomes}))


@cli.command()
@click.option("--target", default="split", show_default=True, metavar="STAGE",
              help="The last stage to run for each dataset.")
@_stage
def prepare(params: Params, target: str) -> None:
    """Ingest, validate and split every dataset in orchestrate.datasets in parallel, on a Dask cluster."""
    from flows.fanout import prepare_datasets
    from flows.local_api import patient_local_api
    from flows.stage_runs import describe_outcomes

    with patient_local_api():
        outcomes = prepare_datasets(*_params_source(), target=target)
    click.echo(describe_outcomes(outcomes))


@cli.command()
@click.option("--work-pool", default=None, metavar="POOL",
              help="Create the deployments on this Prefect work pool instead of serving them here.")
@click.option("--image", default=None, metavar="IMAGE",
              help="With --work-pool (Docker, Kubernetes): a prebuilt image with recloop and the project in it.")
@_stage
def deploy(params: Params, work_pool: str | None, image: str | None) -> None:
    """Serve the Prefect deployments (schedules from orchestrate in params) until stopped; see docs/operations.md."""
    from flows.deployments import deploy_to_work_pool, serve_deployments

    if work_pool:
        ids = deploy_to_work_pool(work_pool, image, *_params_source())
        click.echo(f"created {len(ids)} deployments on work pool {work_pool}: start a worker with "
                   f"`prefect worker start --pool {work_pool}`")
    elif image:
        raise RecloopError("--image goes with --work-pool: served deployments run here, in this environment")
    else:
        serve_deployments(*_params_source())


@cli.command()
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference interactions [default: <paths.split>/train.parquet].")
@click.option("--current", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Current window [default: the newest <paths.split>/live/window_NNN.parquet].")
@click.option("--feedback", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Serving feedback log (SQLite or Parquet): prediction drift and served-list quality.")
@click.option("--reference-feedback", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference feedback log [default: the --feedback rows before the current window].")
@_stage
def monitor(params: Params, reference: Path | None, current: Path | None, feedback: Path | None,
            reference_feedback: Path | None) -> None:
    """Evidently drift report of the current window vs the reference, and the retrain verdict (docs/monitoring.md)."""
    from components.monitoring.monitor import default_inputs
    from components.monitoring.monitor import monitor as run

    inputs = default_inputs(params.paths.split, params.paths.features, reference, current)
    click.echo(run(params.monitor, report_dir=params.paths.reports / "monitoring", feedback=feedback,
                   reference_feedback=reference_feedback, seed=params.seed, **inputs).describe())


@cli.command()
@click.option("--window", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Interactions to learn [default: the newest <paths.split>/live/window_NNN.parquet].")
@_stage
def retrain(params: Params, window: Path | None) -> None:
    """Continual fine-tune of the champion on a new window, gated against it; promotes on a pass (docs/continual.md)."""
    from components.continual.retrain import retrain as run

    click.echo(run(params, window).describe())


@cli.command()
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where monitoring reports and simulation.json go [default: <paths.reports>/simulate].")
@_stage
def simulate(params: Params, work_dir: Path | None) -> None:
    """Replay MovieLens history: train up to simulate.cutoff, then monitor, retrain and gate window by window."""
    from components.continual.simulate import cached_text, movielens_stream
    from components.continual.simulate import simulate as run

    stream, catalog = movielens_stream(params.ingest.path, params.simulate)
    f = params.featurize
    pretrain = params.pretrain if params.finetune.init == "pretrained" else None
    summary = run(stream, catalog, cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir),
                  model=params.model, pretrain=pretrain, finetune=params.finetune, continual=params.continual,
                  monitor_cfg=params.monitor, cfg=params.simulate,
                  work_dir=work_dir or Path(params.paths.reports) / "simulate", seed=params.seed,
                  on_window=lambda step: click.echo(step.describe()))
    click.echo(f"{len(summary.steps)} windows, {sum(s.retrained for s in summary.steps)} retrained, "
               f"{sum(s.promoted for s in summary.steps)} promoted; wrote {summary.report}")


@cli.command("params")
@_stage
def show_params(params: Params) -> None:
    """Print the effective parameters (params.yaml plus overrides, with defaults filled in)."""
    import yaml

    click.echo(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))


def main() -> None:
    cli()


if __name__ == "__main__":  # `python -m components.cli`, the form torchrun's -m launches
    main()
