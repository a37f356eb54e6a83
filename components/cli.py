"""The `recloop` command line: one subcommand per entry of the stage table (components/stages.py), plus
promote, monitor, retrain, simulate, params and report.

Every subcommand takes `--params FILE` and any number of `--set section.key=value` overrides.
User mistakes (bad params, malformed data, missing files) print one clear `error:` line and exit 2.
The Prefect doors (`pipeline`, `prepare`, `deploy`) join this group in flows/cli.py, the `recloop`
console script; `python -m components.cli` (what torchrun launches) is this module alone.
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
from components.stages import (
    STAGES,
    TRAINING,
    Stage,
    feedback_rotate_stage,
    foundation_stage,
    kg_embed_stage,
    kg_stage,
    monitor_stage,
    ope_stage,
    simulate_stage,
    transfer_stage,
)


def with_params(func: Callable[..., Any]) -> Callable[..., Any]:
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
@click.version_option(package_name="recloop", prog_name="recloop")
def cli() -> None:
    """recloop: language-model-powered sequential recommendation, from raw logs to a served, self-renewing model.

    Stages run in order: ingest -> validate -> split -> featurize -> pretrain -> finetune -> evaluate
    -> package. `dvc repro` runs them all, and so does `recloop pipeline` (a Prefect flow that runs
    `dvc repro`, stage by stage).
    """


def _reads(stage: Stage) -> str:
    """The `--help` lines naming the params a stage reads: each section with its keys."""
    lines = ["\b", "Reads params:"]
    for section in stage.sections:
        name, _, key = section.partition(".")
        field = next(f for n, f in Params.model_fields.items() if name in (n, f.alias))
        fields = getattr(field.annotation, "model_fields", None)
        if key or not fields:
            lines.append(f"  {section}")
        else:
            lines.append(f"  {name}: {', '.join(f.alias or n for n, f in fields.items())}")
    return "\n".join(lines)


def _stage_command(stage: Stage) -> click.Command:
    """`recloop <stage>`: the stage table's composition, run once (or as one rank of torchrun)."""

    def run(params: Params) -> None:
        if stage.name not in TRAINING:
            click.echo(stage.run(params).describe())
            return
        from components.training.distributed import process_group

        with process_group(getattr(params, stage.name).device) as main:
            summary = stage.run(params)
        if main:  # under torchrun only the main process reports
            click.echo(summary.describe())

    doc = stage.doc
    if stage.name in TRAINING:
        doc += (f"\n\nUnder `torchrun --nproc_per_node N -m components.cli {stage.name}` it trains with DDP "
                "on N processes.")
    run.__doc__ = f"{doc}\n\n{_reads(stage)}"
    return cli.command(stage.name)(with_params(run))


for stage in STAGES.values():
    _stage_command(stage)


@cli.command()
@click.option("--version", "version", type=int, default=None, help="Make this version the champion "
              "(default: the challenger).")
@click.option("--rollback", is_flag=True, help="Give `champion` back to the version that held it before.")
@click.option("--list", "list_versions", is_flag=True, help="Show the registered versions and their aliases.")
@click.option("--bento/--no-bento", default=True, show_default=True,
              help="Import the new champion into BentoML's model store (what `bentoml serve`/`build` use).")
@with_params
def promote(params: Params, version: int | None, rollback: bool, list_versions: bool, bento: bool) -> None:
    """Move the registry's `champion` alias (to the challenger, to --version N, or back with --rollback); of a
    domain's model with --set registry.domain=NAME (a running service adds it on /reload, docs/serving.md)."""
    from components.registry import registry

    if list_versions:
        import time

        for v in registry.list_versions(params.registry):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"]))
            click.echo(f"version {v['version']:>3}  created {created}  {', '.join(v['aliases'])}")
        if params.registry.domain is None:
            for domain, v in registry.promoted_domains(params.registry).items():
                click.echo(f"domain {domain}: champion version {v} (--set registry.domain={domain})")
        return
    if rollback and version is not None:
        raise RecloopError("give either --version N or --rollback, not both")
    done = registry.rollback(params.registry) if rollback else registry.promote(params.registry, version)
    click.echo(done.describe())
    if bento:
        from components.serving.bento import import_champion

        click.echo(import_champion(params.registry).describe())


@cli.command()
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference interactions [default: <paths.split>/train.parquet].")
@click.option("--current", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Current window [default: the newest <paths.split>/live/window_NNN.parquet].")
@click.option("--feedback", default=None,
              help="Serving feedback log (SQLite file, postgresql:// URL or Parquet): prediction drift and "
                   "served-list quality.")
@click.option("--reference-feedback", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference feedback log [default: the --feedback rows before the current window].")
@with_params
def monitor(params: Params, reference: Path | None, current: Path | None, feedback: str | None,
            reference_feedback: Path | None) -> None:
    """Evidently drift report of the current window vs the reference, and the retrain verdict (docs/monitoring.md)."""
    click.echo(monitor_stage(params, reference, current, feedback, reference_feedback).describe())


@cli.command()
@click.option("--window", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Interactions to learn [default: the newest <paths.split>/live/window_NNN.parquet].")
@with_params
def retrain(params: Params, window: Path | None) -> None:
    """Continual fine-tune of the champion on a new window, gated against it; promotes on a pass (docs/continual.md)."""
    from components.continual.retrain import retrain as run

    click.echo(run(params, window).describe())


@cli.command()
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where monitoring reports and simulation.json go [default: <paths.reports>/simulate].")
@with_params
def simulate(params: Params, work_dir: Path | None) -> None:
    """Replay MovieLens history: train up to simulate.cutoff, then monitor, retrain and gate window by window."""
    summary = simulate_stage(params, work_dir, on_window=lambda step: click.echo(step.describe()))
    click.echo(f"{len(summary.steps)} windows, {sum(s.retrained for s in summary.steps)} retrained, "
               f"{sum(s.promoted for s in summary.steps)} promoted; wrote {summary.report}")


@cli.command()
@with_params
def foundation(params: Params) -> None:
    """Pretrain a foundation on several catalogs (foundation.sources); register it if foundation.registered_model
    is set (docs/transfer.md)."""
    click.echo(foundation_stage(params).describe())


@cli.command()
@with_params
def kg(params: Params) -> None:
    """Ingest and validate the knowledge graph at kg.path (quarantine, report) into paths.kg (docs/fusion.md)."""
    click.echo(kg_stage(params).describe())


@cli.command()
@with_params
def kg_embed(params: Params) -> None:
    """Pretrain entity embeddings of paths.kg with PyKEEN (kg_embed: TransE, RotatE) into paths.kg_embeddings, a
    table for model.sources.vectors (docs/fusion.md)."""
    click.echo(kg_embed_stage(params).describe())


@cli.command()
@click.option("--mode", type=click.Choice(["zero-shot", "adapter", "full"]), default=None,
              help="Override transfer.mode.")
@with_params
def transfer(params: Params, mode: str | None) -> None:
    """Bring a foundation to this pipeline's catalog: zero-shot, adapter or full (docs/transfer.md)."""
    if mode:
        params = params.model_copy(update={"transfer": params.transfer.model_copy(update={"mode": mode})})
    click.echo(transfer_stage(params).describe())


@cli.command()
@click.option("--feedback", default=None,
              help="Feedback log: SQLite file or postgresql:// URL [default: serve.feedback_store, else "
                   "serve.feedback_log].")
@click.option("--challenger", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Challenger model folder [default: <paths.models>/finetuned].")
@with_params
def ope(params: Params, feedback: str | None, challenger: Path | None) -> None:
    """Off-policy evaluation: a challenger model + policy.target against the champion on the logged lists (docs/policy.md)."""
    click.echo(ope_stage(params, feedback, challenger).describe())


@cli.command("feedback-rotate")
@with_params
def feedback_rotate(params: Params) -> None:
    """Move feedback rows older than serve.feedback_keep_days to Parquet files in serve.feedback_archive (docs/serving.md)."""
    click.echo(feedback_rotate_stage(params).describe())


@cli.command("params")
@with_params
def show_params(params: Params) -> None:
    """Print the effective parameters (params.yaml plus overrides, with defaults filled in)."""
    import yaml

    click.echo(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))


@cli.command()
@with_params
def report(params: Params) -> None:
    """Write <paths.reports>/index.html: links to every report written so far and the commands of the UIs."""
    from components.reporting.index import write_index

    click.echo(write_index(params).describe())


def main() -> None:
    cli()


if __name__ == "__main__":  # `python -m components.cli`, the form torchrun's -m launches
    main()
