"""The Great Expectations project: the stored suites, a checkpoint per table, and the Data Docs site.

A GX 1.x file-backed project (by default `gx/` at the repository root):
  great_expectations.yml          the context: its stores, the Data Docs site, the `recloop` pandas data source
  expectations/*.json             the suites of `suites.py` (thresholds are suite parameters)
  validation_definitions/*.json   a table's suite on that table's dataframe
  checkpoints/<table>.json        a table's validation definition, COMPLETE results, Data Docs update
  uncommitted/                    validation results and Data Docs (generated, git-ignored)
`open_project` keeps the stored suites equal to `suites.py`, writing one only when its rules changed, so
the committed files change exactly when the code does. There is a checkpoint per table because the
tables arrive as dataframes, and a checkpoint hands the same batch parameters (the dataframe) to every
validation definition it holds.
"""
from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context import FileDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.datasource.fluent import PandasDatasource
from great_expectations.exceptions import DataContextError

from components.validation.suites import REQUIRED_COLUMNS, all_suites

GX_DIR = Path("gx")
SOURCE = "recloop"
SITE = "local_site"
BATCH = "whole table"
INDEX_RUNS = 60  # validation results on the Data Docs index page: the last 20 runs of the three tables


def _rule(expectation: gx.expectations.Expectation) -> str:
    """An expectation as configured, without the id the store gives it."""
    config = expectation.configuration.to_json_dict()
    config.pop("id", None)
    return json.dumps(config, sort_keys=True)


def _stored_suite(context: FileDataContext, suite: gx.ExpectationSuite) -> gx.ExpectationSuite:
    """The stored suite named like `suite`, rewritten only when its rules differ; unchanged rules keep their ids."""
    try:
        stored = context.suites.get(suite.name)
    except DataContextError:
        return context.suites.add(suite)
    rules = [_rule(e) for e in suite.expectations]
    if rules == [_rule(e) for e in stored.expectations]:
        return stored
    ids = {_rule(e): e.id for e in stored.expectations}
    for expectation, rule in zip(suite.expectations, rules):
        expectation.id = ids.get(rule)
    return context.suites.add_or_update(suite)


def _source(context: FileDataContext) -> PandasDatasource:
    try:
        return context.data_sources.get(SOURCE)
    except KeyError:
        return context.data_sources.add_pandas(SOURCE)


def _validation_definition(context: FileDataContext, source: PandasDatasource, table: str,
                           suite: gx.ExpectationSuite) -> gx.ValidationDefinition:
    try:
        return context.validation_definitions.get(suite.name)
    except DataContextError:
        pass
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(table)
    try:
        batch = asset.get_batch_definition(BATCH)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(BATCH)
    return context.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))


def _checkpoint(context: FileDataContext, table: str, definition: gx.ValidationDefinition) -> gx.Checkpoint:
    try:
        return context.checkpoints.get(table)
    except DataContextError:
        return context.checkpoints.add(gx.Checkpoint(
            name=table, validation_definitions=[definition], result_format="COMPLETE",
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE])]))


@contextmanager
def project_lock(gx_dir: Path = GX_DIR) -> Iterator[None]:
    """Hold the project for one validate run: GX rewrites its YAML and Data Docs index in place, so two
    runs at once (`recloop prepare` validates datasets side by side, in threads or processes) corrupt them."""
    lock = Path(gx_dir) / "uncommitted" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_project(gx_dir: Path = GX_DIR) -> FileDataContext:
    """The GX project in `gx_dir`, created on first use; its suites brought up to date with `suites.py`."""
    gx_dir = Path(gx_dir)
    created = not (gx_dir / "great_expectations.yml").exists()
    context = gx.get_context(mode="file", context_root_dir=gx_dir)
    if created:
        # No usage statistics and no progress bars of GX's own (the stage has one).
        context.variables.analytics_enabled = False
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        # The index page reads every result it lists: list the recent ones, so a run costs the same
        # however long the project's history (older pages stay on disk, in uncommitted/).
        sites = context.variables.data_docs_sites
        sites[SITE]["site_index_builder"]["validation_results_limit"] = INDEX_RUNS
        context.variables.data_docs_sites = sites
        context.variables.save()
    suites = {s.name: _stored_suite(context, s) for s in all_suites()}
    source = _source(context)
    for table in REQUIRED_COLUMNS:
        _checkpoint(context, table, _validation_definition(context, source, table, suites[table]))
    return context


def run_checkpoint(context: FileDataContext, table: str, frame: pd.DataFrame,
                   parameters: dict[str, Any]) -> ExpectationSuiteValidationResult:
    """Run `table`'s checkpoint on `frame` (RangeIndex: results name rows by position)."""
    result = context.checkpoints.get(table).run(batch_parameters={"dataframe": frame},
                                                expectation_parameters=parameters)
    (only,) = result.run_results.values()
    return only


def docs_page(context: FileDataContext) -> Path:
    """The Data Docs site's index page."""
    url = context.get_docs_sites_urls(site_name=SITE)[0]["site_url"]
    page, here = Path(unquote(urlparse(url).path)), Path.cwd()
    return page.relative_to(here) if page.is_relative_to(here) else page
