"""The expectation suites: every validation rule, written once as a Great Expectations expectation.

Each expectation carries its quarantine reason in `meta["reason"]`; `quarantine.py` turns GX's
`unexpected_index_list` into quarantined rows with that reason, so the rules live here and only here.
- severity "warning": reported, never quarantined (the row is usable, a person may want to look).
- `meta["keep"] == "first"`: a uniqueness rule. GX flags every member of a duplicate group; which one
  survives ("the first good one") is a row-order policy GX cannot express, so `quarantine.py` applies
  it, vectorised, to the rows GX flagged.
Rules earlier in a suite take precedence: a row failing several is quarantined with the first reason.
The one rule not held here is referential integrity (interactions naming unknown items or users):
GX cannot check it at catalog scale, see `quarantine.reference_check`.
"""
from __future__ import annotations

from datetime import datetime, timezone

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context import AbstractDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.row_conditions import Column

from components.config import ValidateConfig
from components.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS

REQUIRED_COLUMNS = {"interactions": INTERACTION_COLUMNS, "items": ITEM_COLUMNS, "users": USER_COLUMNS}
# One interaction event: the same user, item, time and kind of event twice is a logging duplicate.
EVENT_KEY = ["user_id", "item_id", "timestamp", "event"]

# Type names GX resolves. String columns read from Parquet are `object` (checked value by value) or
# pandas' string dtype. Timestamps may be float only because ingest kept unparseable values as nulls;
# validate casts the clean column back to int64.
STRING = ["str", "StringDtype"]
INTEGER = ["int", "int64", "int32", "Int64", "Int32"]
NUMBER = [*INTEGER, "float", "float64", "float32", "Float64"]


def _meta(reason: str, **more: str) -> dict[str, str]:
    return {"reason": reason, **more}


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d")


def schema_suite(table: str) -> gx.ExpectationSuite:
    """Required columns of a canonical table; any failure stops the stage before row checks."""
    return gx.ExpectationSuite(name=f"{table}_schema", expectations=[
        gxe.ExpectColumnToExist(column=c, description=f"{table} has a {c} column", meta=_meta(f"missing column {c}"))
        for c in REQUIRED_COLUMNS[table]])


def _not_null(*columns: str) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is present", meta=_meta(f"missing {c}"))
            for c in columns]


def _typed(column: str, types: list[str], what: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=types, description=f"{column} is {what}",
                                                meta=_meta(f"{column} not {what}"))


def interactions_suite(cfg: ValidateConfig, now: int) -> gx.ExpectationSuite:
    """Rules for interactions; `now` (seconds) bounds timestamps when `cfg.max_timestamp` is null.

    Referential integrity (item_id in items, user_id in users) is `quarantine.reference_check`.
    """
    latest = cfg.max_timestamp if cfg.max_timestamp is not None else now
    expectations = [
        *_not_null("user_id", "item_id", "timestamp", "event", "value"),
        _typed("user_id", STRING, "a string"),
        _typed("item_id", STRING, "a string"),
        _typed("event", STRING, "a string"),
        _typed("domain", STRING, "a string"),
        _typed("timestamp", NUMBER, "a number"),
        _typed("value", NUMBER, "a number"),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=cfg.min_timestamp, max_value=latest,
            description=f"timestamp between {_date(cfg.min_timestamp)} and {_date(latest)} (UTC)",
            meta=_meta("timestamp out of range")),
    ]
    if cfg.min_value is not None or cfg.max_value is not None:
        expectations.append(gxe.ExpectColumnValuesToBeBetween(
            column="value", min_value=cfg.min_value, max_value=cfg.max_value,
            description=f"value between {cfg.min_value} and {cfg.max_value}", meta=_meta("value out of range")))
    expectations.append(gxe.ExpectCompoundColumnsToBeUnique(
        column_list=EVENT_KEY, description="one row per user, item, timestamp and event; the first is kept",
        meta=_meta("duplicate event", keep="first")))
    return gx.ExpectationSuite(name="interactions", expectations=expectations)


def items_suite() -> gx.ExpectationSuite:
    """Rules for the item catalog; an item with neither title nor text is only a warning (text fallback)."""
    no_text = (Column("text") == "") | Column("text").is_null()
    return gx.ExpectationSuite(name="items", expectations=[
        *_not_null("item_id", "title", "categories"),
        _typed("item_id", STRING, "a string"),
        _typed("title", STRING, "a string"),
        _typed("text", STRING, "a string"),
        _typed("domain", STRING, "a string"),
        # Parquet list columns arrive as numpy arrays; validate hands GX Python lists.
        _typed("categories", ["list"], "a list"),
        gxe.ExpectColumnValuesToBeUnique(column="item_id", description="item_id is unique; the first is kept",
                                         meta=_meta("duplicate item", keep="first")),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="title", regex=r"^\s*$", row_condition=no_text, severity="warning",
            description="an item without text has a title", meta=_meta("empty title and text")),
    ])


def users_suite() -> gx.ExpectationSuite:
    """Rules for the users table."""
    return gx.ExpectationSuite(name="users", expectations=[
        *_not_null("user_id"),
        _typed("user_id", STRING, "a string"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id", description="user_id is unique; the first is kept",
                                         meta=_meta("duplicate user", keep="first")),
    ])


def ephemeral_context() -> AbstractDataContext:
    """An in-memory GX context: nothing written to disk, no usage statistics, no progress bars of its own."""
    config = DataContextConfig(analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
                               store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False))
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(context: AbstractDataContext, suite: gx.ExpectationSuite,
              frame: pd.DataFrame) -> ExpectationSuiteValidationResult:
    """Validate `frame` against `suite`; COMPLETE results carry every failing row's index."""
    source = context.data_sources.add_or_update_pandas("recloop")
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite)))
    return definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
