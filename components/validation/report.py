"""What validation found, for people (one self-contained HTML page) and for DVC (flat-ish JSON metrics)."""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from components.config import ValidateConfig
from components.validation.quarantine import EXAMPLES, GX, TableOutcome

HTML_FILE = "validation.html"
JSON_FILE = "validation.json"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 90em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; font-weight: bold; }
.fail { color: #c62828; font-weight: bold; }
.warn { color: #b26a00; font-weight: bold; }
.banner { padding: .8em 1em; border-radius: 4px; }
.banner.pass { background: #e6f4ea; }
.banner.fail { background: #fdecea; }
pre { background: #f8f8f8; padding: .5em; overflow-x: auto; white-space: pre-wrap; margin: .3em 0; }
.note { color: #666; font-size: .9em; }
td.rule { font-family: monospace; font-size: .8em; color: #555; max-width: 28em; }
"""


@dataclass
class Verdict:
    """Whether the clean tables are fit to train on, and why not."""

    passed: bool
    problems: list[str]
    quarantine_fraction: float


def _by_reason(outcomes: list[TableOutcome], ingest: pd.DataFrame) -> list[tuple[str, str, str, int]]:
    """(stage, table, reason, rows) for every reason that quarantined at least one row."""
    rows = [("ingest", str(t), str(r), int(n)) for (t, r), n in ingest.groupby(["table", "reason"]).size().items()]
    rows += [("validate", o.table, c.reason, c.quarantined) for o in outcomes for c in o.checks if c.quarantined]
    return rows


def metrics(outcomes: list[TableOutcome], ingest: pd.DataFrame, verdict: Verdict) -> dict:
    """The DVC metric: rows in/out per table, quarantined rows per reason, each check's verdict."""
    ingest_counts = ingest["table"].value_counts()
    return {
        "passed": verdict.passed,
        "quarantine_fraction": round(verdict.quarantine_fraction, 6),
        "tables": {o.table: {"rows_in": o.rows_in, "rows_out": len(o.clean), "quarantined": len(o.quarantine),
                             "ingest_quarantined": int(ingest_counts.get(o.table, 0))} for o in outcomes},
        "quarantined": {f"{stage}: {table}: {reason}": n for stage, table, reason, n in _by_reason(outcomes, ingest)},
        "checks": {c.name: {"passed": c.passed, "unexpected": c.unexpected, "quarantined": c.quarantined}
                   for o in outcomes for c in o.checks},
        "warnings": {f"{o.table}: {c.reason}": c.unexpected for o in outcomes for c in o.warnings},
    }


def _cell(value: object, cls: str = "") -> str:
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _examples(title: str, rows: list[str]) -> str:
    shown = "".join(f"<pre>{html.escape(r)}</pre>" for r in rows)
    return f"<h4>{html.escape(title)}</h4>{shown}"


def _outcome_section(o: TableOutcome) -> str:
    rows = []
    for i, c in enumerate(o.checks, 1):
        if c.passed:
            verdict = '<td class="pass">pass</td>'
        elif c.severity == "critical":
            verdict = '<td class="fail">FAIL</td>'
        else:
            verdict = '<td class="warn">warning</td>'
        engine = "GX" if c.engine == GX else c.engine
        rows.append(f"<tr>{_cell(i, 'n')}{_cell(c.description)}{verdict}{_cell(c.unexpected, 'n')}"
                    f"{_cell(c.quarantined, 'n')}{_cell(c.reason)}{_cell(f'{c.rule} ({engine})', 'rule')}"
                    f"{_cell(c.params, 'rule')}</tr>")
    parts = [f"<h2>{html.escape(o.table)}</h2>",
             f"<p>{o.rows_in:,} rows in, {len(o.clean):,} kept, {len(o.quarantine):,} quarantined.</p>",
             _table(["#", "check", "result", "unexpected rows", "quarantined", "reason", "rule", "parameters"], rows)]
    for c in o.checks:
        if c.examples:
            what = "flagged (kept)" if c.severity != "critical" else "quarantined"
            parts.append(_examples(f"{c.description}: {c.reason}, first {len(c.examples)} {what} rows "
                                   f"[{c.rule} on {', '.join(c.columns)}]", c.examples))
    return "".join(parts)


def render_html(outcomes: list[TableOutcome], ingest: pd.DataFrame, verdict: Verdict, cfg: ValidateConfig,
                in_dir: Path, out_dir: Path) -> str:
    """One self-contained page a person can read in any browser: verdict, counts, every check, examples."""
    if verdict.passed:
        banner = (f'<p class="banner pass">PASSED: the clean tables and the quarantine were written to '
                  f"{html.escape(str(out_dir))}.</p>")
    else:
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in verdict.problems)
        banner = (f'<div class="banner fail"><p>FAILED: what is left is unfit to train on; nothing was written '
                  f"to {html.escape(str(out_dir))}.</p><ul>{problems}</ul></div>")
    ingest_counts = ingest["table"].value_counts()
    totals = [f"<tr>{_cell(o.table)}{_cell(o.rows_in, 'n')}{_cell(len(o.clean), 'n')}"
              f"{_cell(len(o.quarantine), 'n')}{_cell(int(ingest_counts.get(o.table, 0)), 'n')}</tr>"
              for o in outcomes]
    reasons = [f"<tr>{_cell(stage)}{_cell(table)}{_cell(reason)}{_cell(n, 'n')}</tr>"
               for stage, table, reason, n in _by_reason(outcomes, ingest)]
    warnings = [f"<li><span class=\"warn\">{html.escape(o.table)}</span>: {html.escape(c.reason)} in "
                f"{c.unexpected:,} row(s), kept: the model falls back on what text there is</li>"
                for o in outcomes for c in o.warnings]
    thresholds = (f"max_quarantine_fraction={cfg.max_quarantine_fraction}, min_interactions={cfg.min_interactions:,}, "
                  f"min_users={cfg.min_users:,}, min_items={cfg.min_items:,}")
    parts = [
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>recloop validation report</title>"
        f"<style>{STYLE}</style></head><body>",
        "<h1>Validation report</h1>",
        banner,
        f'<p class="note">Input {html.escape(str(in_dir))}; written '
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Thresholds: {html.escape(thresholds)}. "
        f"{verdict.quarantine_fraction:.2%} of interactions quarantined (ingest's unparseable rows included).</p>",
        "<h2>Tables</h2>",
        _table(["table", "rows in", "kept", "quarantined by validate", "quarantined by ingest"], totals),
        "<h2>Quarantined rows per reason</h2>",
        _table(["stage", "table", "reason", "rows"], reasons) if reasons else "<p>None.</p>",
        "<h2>Warnings</h2>",
        f"<ul>{''.join(warnings)}</ul>" if warnings else "<p>None.</p>",
        '<p class="note">Each table is checked rule by rule; a row that breaks several rules is quarantined '
        "with the first one's reason, so 'unexpected rows' may exceed 'quarantined'. Duplicate rules flag every "
        "member of a duplicate group and quarantine all but the first good one.</p>",
        *(_outcome_section(o) for o in outcomes),
    ]
    if len(ingest):
        parts.append("<h2>Rows ingest could not parse</h2>")
        for (table, reason), group in ingest.groupby(["table", "reason"]):
            parts.append(_examples(f"{table}: {reason} ({len(group):,} rows, first {min(len(group), EXAMPLES)})",
                                   group["row"].astype(str).head(EXAMPLES).tolist()))
    parts.append("</body></html>")
    return "\n".join(parts)
