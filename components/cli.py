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

    Stages run in order: ingest -> validate -> split. `dvc repro` runs them all.
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


@cli.command("params")
@_stage
def show_params(params: Params) -> None:
    """Print the effective parameters (params.yaml plus overrides, with defaults filled in)."""
    import yaml

    click.echo(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))


def main() -> None:
    cli()
