"""From rule results to quarantined rows: every row a critical rule flagged leaves the table with a reason.

GX's COMPLETE result lists the index of every row an expectation rejected (`unexpected_index_list`);
the rules themselves live in `suites.py`. This module only decides, vectorised over row positions,
which reason each rejected row gets (the first rule it broke, in suite order) and which member of a
duplicate group survives (the first one that broke nothing else).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from string import Template
from typing import Any

import numpy as np
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.expectations.metadata_types import FailureSeverity

from components.data.schema import quarantine_frame
from components.errors import RecloopError

EXAMPLES = 5
GX = "great_expectations"
PANDAS = "pandas"


@dataclass
class Check:
    """One rule's outcome on one table, whichever engine evaluated it."""

    table: str
    rule: str  # the GX expectation type, or the name of a pandas rule
    columns: list[str]
    description: str  # what the rule asks, for people
    params: str  # its parameters as GX (or pandas) sees them
    reason: str
    severity: str  # "critical" rows are quarantined; "warning" rows are only reported
    engine: str
    flagged: np.ndarray  # positions of the rows that broke the rule, ascending
    keep_first: bool = False
    quarantined: int = 0  # rows quarantined with this reason (after precedence and keep-first)
    examples: list[str] = field(default_factory=list)

    @property
    def unexpected(self) -> int:
        return len(self.flagged)

    @property
    def passed(self) -> bool:
        return self.unexpected == 0

    @property
    def name(self) -> str:
        return f"{self.table}.{','.join(self.columns)}.{self.rule}"


@dataclass
class TableOutcome:
    """A table split into the rows kept and the rows quarantined, with every check that decided it."""

    table: str
    rows_in: int
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    checks: list[Check]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.severity != FailureSeverity.CRITICAL.value and not c.passed]


def _condition(node: dict) -> str:
    """GX's serialised row condition, as a person would write it."""
    if node.get("type") in ("or", "and"):
        return f" {node['type']} ".join(_condition(c) for c in node["conditions"])
    if node.get("type") == "nullity":
        return f"{node['column']['name']} is {'' if node['is_null'] else 'not '}null"
    return f"{node['column']['name']} {node['operator']} {node['parameter']!r}"


def _params(kwargs: dict) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in ("column", "column_list", "batch_id") and v is not None}
    if isinstance(shown.get("row_condition"), dict):
        shown["row_condition"] = _condition(shown["row_condition"])
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _exception(info: dict) -> str | None:
    """The error that stopped an expectation; GX reports it flat or per metric."""
    entries = [info] if "raised_exception" in info else [e for e in info.values() if isinstance(e, dict)]
    messages = [str(e.get("exception_message")) for e in entries if e.get("raised_exception")]
    return "; ".join(messages) or None


def gx_checks(table: str, rule_ids: list[str], result: ExpectationSuiteValidationResult,
              parameters: dict[str, Any]) -> list[Check]:
    """Checks from a GX suite run for the rules in `rule_ids`, in that order (GX returns them in its own);
    `parameters` (the run's suite parameters) fill in the descriptions' `$name`s.

    Raises RecloopError when a rule could not judge rows at all: a column of the wrong dtype altogether,
    or values a rule cannot compare (text in a number column): that is a broken table, not bad rows.
    """
    order = {expectation_id: i for i, expectation_id in enumerate(rule_ids)}
    checks, problems = [], []
    ours = [r for r in result.results if r.expectation_config.id in order]
    for r in sorted(ours, key=lambda r: order[r.expectation_config.id]):
        config = r.expectation_config
        columns = config.kwargs.get("column_list") or [config.kwargs["column"]]
        error = _exception(r.exception_info or {})
        if error:
            problems.append(f"{config.type} on {table}.{columns[0]} could not run: {error}")
            continue
        if "unexpected_index_list" in r.result:
            flagged = np.sort(np.asarray(r.result["unexpected_index_list"], dtype=np.int64))
        elif r.success:
            flagged = np.empty(0, dtype=np.int64)
        else:
            # A verdict on the whole column (its dtype is not an allowed one): no row to blame.
            problems.append(f"{table}.{columns[0]} has dtype {r.result.get('observed_value')}, "
                            f"expected one of {config.kwargs.get('type_list')}")
            continue
        description = Template(config.description).safe_substitute(parameters)
        checks.append(Check(table=table, rule=config.type, columns=list(columns), description=description,
                            params=_params(config.kwargs), reason=config.meta["reason"],
                            severity=str(config.severity.value), engine=GX, flagged=flagged,
                            keep_first=config.meta.get("keep") == "first"))
    if problems:
        problems += [f"{c.unexpected:,} rows with {c.reason}" for c in checks if c.unexpected]
        raise RecloopError(f"cannot validate {table}: " + "; ".join(problems)
                           + ". The canonical tables should come from `recloop ingest`: re-run it")
    return checks


def reference_check(table: str, frame: pd.DataFrame, column: str, catalog: pd.Series, catalog_name: str,
                    reason: str) -> Check:
    """Rows whose `column` names nothing in the clean `catalog` (referential integrity).

    A pandas rule on purpose: GX's ExpectColumnValuesToBeInSet keeps the whole catalog in the
    expectation's configuration, which GX re-serialises thousands of times per run (minutes for a
    million-item catalog); `isin` is one hash lookup per row. Null ids are left to the not-null rule.
    """
    values = frame[column]
    flagged = np.flatnonzero((~values.isin(catalog) & values.notna()).to_numpy())
    return Check(table=table, rule="values_in_catalog", columns=[column],
                 description=f"{column} names a row of the clean {catalog_name} table",
                 params=f"{catalog.nunique():,} ids", reason=reason,
                 severity=FailureSeverity.CRITICAL.value, engine=PANDAS, flagged=flagged)


def split_rows(table: str, frame: pd.DataFrame, checks: list[Check]) -> TableOutcome:
    """Keep the rows no critical check flagged; quarantine the rest with the first reason they broke.

    `frame` must have a RangeIndex (positions are GX's index labels). Keep-first checks run last, on
    the rows that broke nothing else, so a bad row never displaces a good duplicate.
    """
    critical = [c for c in checks if c.severity == FailureSeverity.CRITICAL.value]
    code = np.full(len(frame), -1, dtype=np.int32)  # index into `critical`; -1 keeps the row
    for k, check in enumerate(critical):
        if not check.keep_first:
            hit = check.flagged[code[check.flagged] < 0]
            code[hit] = k
    for k, check in enumerate(critical):
        if check.keep_first:
            candidates = check.flagged[code[check.flagged] < 0]
            key = frame.iloc[candidates, frame.columns.get_indexer(check.columns)]
            later = key.duplicated(keep="first").to_numpy()
            code[candidates[later]] = k

    bad = np.flatnonzero(code >= 0)
    rule_of = code[bad]
    reasons = np.array([c.reason for c in critical] or [""], dtype=object)
    rules = np.array([c.rule for c in critical] or [""], dtype=object)
    quarantined = quarantine_frame(table, pd.Series(reasons[rule_of], dtype=object), frame.iloc[bad])
    quarantined["expectation"] = rules[rule_of]
    quarantined["row_index"] = bad
    counts = np.bincount(rule_of, minlength=len(critical))
    for k, check in enumerate(critical):
        check.quarantined = int(counts[k])
        check.examples = quarantined["row"][rule_of == k].head(EXAMPLES).tolist()
    for check in checks:
        if check.severity != FailureSeverity.CRITICAL.value:
            check.examples = quarantine_frame(table, check.reason, frame.iloc[check.flagged[:EXAMPLES]])["row"].tolist()
    clean = frame.iloc[np.flatnonzero(code < 0)].reset_index(drop=True)
    return TableOutcome(table=table, rows_in=len(frame), clean=clean, quarantine=quarantined, checks=checks)
