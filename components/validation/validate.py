"""The validate stage: canonical tables -> clean tables + quarantine, a report for people and metrics for DVC.

Order of work: each table's GX checkpoint -> required columns (a missing one stops everything) ->
items -> users -> interactions (whose item and user ids must name rows that survived their own
tables) -> thresholds -> write.
The checkpoints (`project.py`) also record the results and update the GX Data Docs. Everything is computed before anything is written; the clean tables and the
quarantine replace `out_dir` in one rename, and only when the thresholds pass.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context import FileDataContext
from tqdm import tqdm

from components.atomic import staged_dir, write_json, write_text
from components.config import ValidateConfig
from components.data.schema import (
    INTERACTIONS_FILE,
    ITEMS_FILE,
    QUARANTINE_COLUMNS,
    QUARANTINE_FILE,
    USERS_FILE,
    empty_users,
)
from components.errors import RecloopError
from components.validation.project import GX_DIR, docs_page, open_project, project_lock, run_checkpoint
from components.validation.quarantine import Check, TableOutcome, gx_checks, reference_check, split_rows
from components.validation.report import HTML_FILE, JSON_FILE, Verdict, metrics, render_html
from components.validation.suites import COLUMN_RULE, REQUIRED_COLUMNS, row_rules, suite_parameters

TABLE_FILES = {"interactions": INTERACTIONS_FILE, "items": ITEMS_FILE, "users": USERS_FILE}


@dataclass
class ValidationSummary:
    rows_in: dict[str, int]
    rows_out: dict[str, int]
    # "table: reason" -> rows quarantined by this stage
    quarantined: dict[str, int]
    ingest_quarantined: int
    warnings: dict[str, int]
    quarantine_fraction: float
    out_dir: str
    report: str
    data_docs: str

    def describe(self) -> str:
        flow = ", ".join(f"{t} {self.rows_in[t]:,} -> {self.rows_out[t]:,}" for t in self.rows_in)
        lines = [f"validate: {flow} ({self.quarantine_fraction:.2%} of interactions quarantined)"]
        for table in self.rows_in:
            counts = sorted(((k.split(": ", 1)[1], n) for k, n in self.quarantined.items()
                             if k.startswith(f"{table}: ")), key=lambda kv: -kv[1])
            if counts:
                lines.append(f"  quarantined {table}: " + ", ".join(f"{reason} {n:,}" for reason, n in counts))
        if self.ingest_quarantined:
            lines.append(f"  quarantined by ingest: {self.ingest_quarantined:,} rows")
        lines += [f"  warning (rows kept): {key} {n:,}" for key, n in self.warnings.items()]
        lines.append(f"  wrote {self.out_dir}; report {self.report}; GX Data Docs {self.data_docs}")
        return "\n".join(lines)


def _read_inputs(in_dir: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The three canonical tables (RangeIndex: GX reports row positions) and ingest's quarantine."""
    missing = [f for t, f in TABLE_FILES.items() if t != "users" and not (in_dir / f).exists()]
    if missing:
        raise RecloopError(f"{in_dir} lacks {', '.join(missing)}: run `recloop ingest` first")
    frames = {t: pd.read_parquet(in_dir / f).reset_index(drop=True) if (in_dir / f).exists() else empty_users()
              for t, f in TABLE_FILES.items()}
    if "categories" in frames["items"]:
        # Parquet hands list columns back as numpy arrays; GX's type check knows Python lists.
        frames["items"]["categories"] = [v.tolist() if isinstance(v, np.ndarray) else v
                                         for v in frames["items"]["categories"]]
    ingest_quarantine = (pd.read_parquet(in_dir / QUARANTINE_FILE) if (in_dir / QUARANTINE_FILE).exists()
                         else pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS}))
    return frames, ingest_quarantine


def _check_columns(results: dict[str, ExpectationSuiteValidationResult], in_dir: Path) -> None:
    """Stop with one message naming every required column that is absent."""
    lacking = []
    for table, result in results.items():
        absent = sorted(r.expectation_config.kwargs["column"] for r in result.results
                        if r.expectation_config.type == COLUMN_RULE and not r.success)
        if absent:
            lacking.append(f"{TABLE_FILES[table]} lacks {', '.join(absent)} "
                           f"(a canonical {table} table has {', '.join(REQUIRED_COLUMNS[table])})")
    if lacking:
        raise RecloopError(f"{in_dir}: {'; '.join(lacking)}: re-run `recloop ingest`")


def _split_table(context: FileDataContext, table: str, frame: pd.DataFrame, result: ExpectationSuiteValidationResult,
                 parameters: dict[str, Any], extra: Sequence[Check] = ()) -> TableOutcome:
    checks = gx_checks(table, row_rules(context.suites.get(table)), result, parameters)
    # Pandas rules go before keep-first rules so that precedence follows the listed order in the report.
    keep_first = [c for c in checks if c.keep_first]
    return split_rows(table, frame, [c for c in checks if not c.keep_first] + list(extra) + keep_first)


def _verdict(cfg: ValidateConfig, interactions: TableOutcome, ingest_lost: int) -> Verdict:
    """Is what is left fit to train on? Rows ingest could not parse count as quarantined too."""
    clean = interactions.clean
    total = interactions.rows_in + ingest_lost
    fraction = (len(interactions.quarantine) + ingest_lost) / total if total else 0.0
    problems = []
    if fraction > cfg.max_quarantine_fraction:
        problems.append(f"{fraction:.1%} of interactions were quarantined, more than "
                        f"validate.max_quarantine_fraction={cfg.max_quarantine_fraction}")
    for what, left, least in (("interactions", len(clean), cfg.min_interactions),
                              ("users", clean["user_id"].nunique(), cfg.min_users),
                              ("items", clean["item_id"].nunique(), cfg.min_items)):
        if left < least:
            kept = what if what == "interactions" else f"{what} with interactions"
            problems.append(f"only {left:,} {kept} are left, fewer than validate.min_{what}={least:,}")
    return Verdict(passed=not problems, problems=problems, quarantine_fraction=fraction)


def _canonical_types(interactions: pd.DataFrame) -> pd.DataFrame:
    """Timestamps arrive as float when ingest kept unparseable ones as nulls; with those gone, int64 again."""
    if interactions["timestamp"].dtype != np.int64:
        interactions["timestamp"] = interactions["timestamp"].astype(np.int64)
    if interactions["value"].dtype != np.float64:
        interactions["value"] = interactions["value"].astype(np.float64)
    return interactions


def _all_quarantined(outcomes: list[TableOutcome], ingest: pd.DataFrame) -> pd.DataFrame:
    ingest = ingest.assign(stage="ingest", expectation=None, row_index=pd.array([None] * len(ingest), dtype="Int64"))
    ours = [o.quarantine.assign(stage="validate", row_index=o.quarantine["row_index"].astype("Int64"))
            for o in outcomes]
    return pd.concat([ingest, *ours], ignore_index=True)


def _write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> None:
    with staged_dir(out_dir) as tmp:
        for file, frame in tables.items():
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / file)


def _check_tables(cfg: ValidateConfig, in_dir: Path, context: FileDataContext,
                  progress: tqdm) -> tuple[list[TableOutcome], pd.DataFrame]:
    """Run every rule: the interactions, items and users outcomes (in that order), and ingest's quarantine."""
    frames, ingest = _read_inputs(in_dir)
    parameters = suite_parameters(cfg, now=int(time.time()))
    results = {table: run_checkpoint(context, table, frame, parameters) for table, frame in frames.items()}
    _check_columns(results, in_dir)
    progress.update()

    items = _split_table(context, "items", frames.pop("items"), results["items"], parameters)
    users_given = len(frames["users"]) > 0
    users = _split_table(context, "users", frames.pop("users"), results["users"], parameters)
    progress.update()
    interactions = frames.pop("interactions")
    references = [reference_check("interactions", interactions, "item_id", items.clean["item_id"], "items",
                                  "unknown item")]
    if users_given:
        references.append(reference_check("interactions", interactions, "user_id", users.clean["user_id"],
                                          "users", "unknown user"))
    outcome = _split_table(context, "interactions", interactions, results["interactions"],
                           parameters, references)
    progress.update()
    return [outcome, items, users], ingest


def validate(cfg: ValidateConfig, in_dir: Path, out_dir: Path, report_dir: Path,
             gx_dir: Path = GX_DIR) -> ValidationSummary:
    """Check the canonical tables in `in_dir`; write the clean ones and the quarantine to `out_dir`.

    The rules run as the checkpoints of the GX project in `gx_dir` (created on first use), which record
    the results and update its Data Docs. Once the rules have run, writes `report_dir/validation.html`
    and `validation.json`, pass or fail.
    Raises RecloopError, leaving `out_dir` as it was, when a required column is missing, a column has
    the wrong dtype altogether, or what is left is unfit to train on (`cfg.max_quarantine_fraction`,
    `cfg.min_interactions` / `min_users` / `min_items`).
    """
    in_dir, out_dir, report_dir = Path(in_dir), Path(out_dir), Path(report_dir)
    with (project_lock(gx_dir),
          tqdm(total=5, desc="validate", unit="step", file=sys.stderr, leave=False) as progress):
        context = open_project(gx_dir)
        outcomes, ingest = _check_tables(cfg, in_dir, context, progress)
        interactions, items, users = outcomes
        verdict = _verdict(cfg, interactions, ingest_lost=int((ingest["table"] == "interactions").sum()))
        html, json_path = report_dir / HTML_FILE, report_dir / JSON_FILE
        write_text(html, render_html(outcomes, ingest, verdict, cfg, in_dir, out_dir))
        write_json(json_path, metrics(outcomes, ingest, verdict))
        progress.update()
        if not verdict.passed:
            raise RecloopError(f"validation failed: {'; '.join(verdict.problems)}. Nothing was written to "
                               f"{out_dir}; see {html} for the rejected rows and their reasons")
        _write_tables({INTERACTIONS_FILE: _canonical_types(interactions.clean), ITEMS_FILE: items.clean,
                       USERS_FILE: users.clean, QUARANTINE_FILE: _all_quarantined(outcomes, ingest)}, out_dir)
        progress.update()
    return ValidationSummary(
        rows_in={o.table: o.rows_in for o in outcomes},
        rows_out={o.table: len(o.clean) for o in outcomes},
        quarantined={f"{o.table}: {c.reason}": c.quarantined for o in outcomes for c in o.checks if c.quarantined},
        ingest_quarantined=len(ingest),
        warnings={f"{o.table}: {c.reason}": c.unexpected for o in outcomes for c in o.warnings},
        quarantine_fraction=verdict.quarantine_fraction,
        out_dir=str(out_dir),
        report=str(html),
        data_docs=str(docs_page(context)),
    )
