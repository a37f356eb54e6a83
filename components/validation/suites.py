"""The expectation suites: every validation rule, written once as a Great Expectations expectation.

Each expectation carries its quarantine reason in `meta["reason"]`; `quarantine.py` turns GX's
`unexpected_index_list` into quarantined rows with that reason, so the rules live here and only here.
- severity "warning": reported, never quarantined (the row is usable, a person may want to look).
- `meta["keep"] == "first"`: a uniqueness rule. GX flags every member of a duplicate group; which one
  survives ("the first good one") is a row-order policy GX cannot express, so `quarantine.py` applies
  it, vectorised, to the rows GX flagged.
Each suite opens with its table's required columns; a missing one stops the stage before rows are judged.
Rules earlier in a suite take precedence: a row failing several is quarantined with the first reason.
The one rule not held here is referential integrity (interactions naming unknown items or users):
GX cannot check it at catalog scale, see `quarantine.reference_check`.

Thresholds that come from params are GX suite parameters (`{"$PARAMETER": name}`), filled in at run
time by `suite_parameters`: the suites stored in the GX project (`project.py`) then never change with
params or with the clock, and a description's `$name` is filled in from the same values.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from components.config import ValidateConfig
from components.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS

REQUIRED_COLUMNS = {"interactions": INTERACTION_COLUMNS, "items": ITEM_COLUMNS, "users": USER_COLUMNS}
# One interaction event: the same user, item, time and kind of event twice is a logging duplicate.
EVENT_KEY = ["user_id", "item_id", "timestamp", "event"]
COLUMN_RULE = "expect_column_to_exist"

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


def _columns(table: str) -> list[gxe.Expectation]:
    """The required columns of a canonical table: a missing one stops the stage before any row is judged."""
    return [gxe.ExpectColumnToExist(column=c, description=f"{table} has a {c} column",
                                    meta=_meta(f"missing column {c}"))
            for c in REQUIRED_COLUMNS[table]]


def row_rules(suite: gx.ExpectationSuite) -> list[str]:
    """The ids of the rules that judge rows, in suite order (every rule but the required columns)."""
    return [e.id for e in suite.expectations if e.expectation_type != COLUMN_RULE]


def _not_null(*columns: str) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is present", meta=_meta(f"missing {c}"))
            for c in columns]


def _typed(column: str, types: list[str], what: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=types, description=f"{column} is {what}",
                                                meta=_meta(f"{column} not {what}"))


def _parameter(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def suite_parameters(cfg: ValidateConfig, now: int) -> dict[str, Any]:
    """The run-time values of the suites' parameters; `now` (seconds) bounds timestamps when
    `cfg.max_timestamp` is null. A value range with neither end set admits every value."""
    latest = cfg.max_timestamp if cfg.max_timestamp is not None else now
    unbounded = cfg.min_value is None and cfg.max_value is None
    return {"min_timestamp": cfg.min_timestamp, "max_timestamp": latest,
            "min_date": _date(cfg.min_timestamp), "max_date": _date(latest),
            # GX's range rule needs one end; -inf keeps the rule (and the stored suite) the same.
            "min_value": -math.inf if unbounded else cfg.min_value, "max_value": cfg.max_value}


def interactions_suite() -> gx.ExpectationSuite:
    """Rules for interactions; the timestamp and value ranges are suite parameters.

    Referential integrity (item_id in items, user_id in users) is `quarantine.reference_check`.
    """
    return gx.ExpectationSuite(name="interactions", expectations=[
        *_columns("interactions"),
        *_not_null("user_id", "item_id", "timestamp", "event", "value"),
        _typed("user_id", STRING, "a string"),
        _typed("item_id", STRING, "a string"),
        _typed("event", STRING, "a string"),
        _typed("domain", STRING, "a string"),
        _typed("timestamp", NUMBER, "a number"),
        _typed("value", NUMBER, "a number"),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=_parameter("min_timestamp"), max_value=_parameter("max_timestamp"),
            description="timestamp between $min_date and $max_date (UTC)", meta=_meta("timestamp out of range")),
        gxe.ExpectColumnValuesToBeBetween(
            column="value", min_value=_parameter("min_value"), max_value=_parameter("max_value"),
            description="value between $min_value and $max_value", meta=_meta("value out of range")),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=EVENT_KEY, description="one row per user, item, timestamp and event; the first is kept",
            meta=_meta("duplicate event", keep="first")),
    ])


def items_suite() -> gx.ExpectationSuite:
    """Rules for the item catalog; an item with neither title nor text is only a warning (text fallback)."""
    no_text = (Column("text") == "") | Column("text").is_null()
    return gx.ExpectationSuite(name="items", expectations=[
        *_columns("items"),
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
        *_columns("users"),
        *_not_null("user_id"),
        _typed("user_id", STRING, "a string"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id", description="user_id is unique; the first is kept",
                                         meta=_meta("duplicate user", keep="first")),
    ])


def all_suites() -> list[gx.ExpectationSuite]:
    """Every suite the GX project stores, one per table, named like it."""
    return [interactions_suite(), items_suite(), users_suite()]
