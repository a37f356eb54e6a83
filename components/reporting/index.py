"""`reports/index.html`: one page that links what the pipeline and the loop wrote, and opens the UIs.

Sections, each from the files its stage leaves under `paths.reports` (links are relative, so the
folder can be copied or served as it is):
  validation    validation.html (recloop's page, quarantine reasons) and the Great Expectations Data Docs
  training      pretrain/finetune_history.csv: validation NDCG@10 by epoch, drawn inline
  evaluation    evaluation.md, its charts (evaluation/*.png) and the headline numbers of metrics.json
  monitoring    monitoring/latest.json: the verdict and its reasons, linked to its Evidently report
  continual     continual/<run>.json: each gate's decision, champion vs challenger
  tools         the commands that start the MLflow, Prefect, Evidently and BentoML UIs
A part that is missing says so, with the command that makes it. The page is rebuilt from the files
each time (`recloop report`); it holds no state of its own.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from html import escape
from math import nan
from pathlib import Path

from components.atomic import write_text
from components.config import Params

INDEX_FILE = "index.html"
# Where the validate stage's Great Expectations project builds its Data Docs (relative to the project root).
GX_DATA_DOCS = Path("gx/uncommitted/data_docs/local_site/index.html")
# Written by the stages (their modules name them too: evaluation/report.py, monitoring/monitor.py,
# continual/retrain.py); tests/reporting checks that the names still agree.
VALIDATION_FILE = "validation.html"
HISTORY_FILES = {"pretrain": "pretrain_history.csv", "finetune": "finetune_history.csv"}
EVALUATION_FILE = "evaluation.md"
EVALUATION_ASSETS = "evaluation"
METRICS_FILE = "metrics.json"
MONITORING_DIR = "monitoring"
LATEST_VERDICT = "latest.json"
CONTINUAL_DIR = "continual"
HISTORY_METRIC = "valid_ndcg@10"
HEADLINE_METRICS = ("ndcg@10", "hr@10", "mrr@10", "coverage@10")
MAX_LISTED = 10


@dataclass
class Section:
    title: str
    html: str
    found: int = 0  # parts with content
    missing: list[str] = field(default_factory=list)  # "what: command" for each part not there yet


@dataclass
class IndexSummary:
    path: Path
    present: list[str]
    missing: list[str]

    def describe(self) -> str:
        lines = [f"report: wrote {self.path} (with content: {', '.join(self.present)})"]
        lines += [f"  not run yet: {m}" for m in self.missing]
        return "\n".join(lines)


def _link(target: Path, base: Path, text: str | None = None) -> str:
    href = Path(os.path.relpath(target, base)).as_posix()
    return f'<a href="{escape(href)}">{escape(text or target.name)}</a>'


def _code(command: str) -> str:
    return f"<code>{escape(command)}</code>"


def _not_run(what: str, command: str) -> str:
    return f'<p class="missing">{escape(what)}: not run yet: {_code(command)}</p>'


def _read_json(path: Path) -> dict | list | None:
    """A report's JSON, or None when it is absent or half-understood (the page must still build)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _section(title: str, parts: list[tuple[str, str | None, str]]) -> Section:
    """`parts`: (what, its html or None when missing, the command that makes it)."""
    body = [html if html is not None else _not_run(what, command) for what, html, command in parts]
    missing = [f"{what}: {command}" for what, html, command in parts if html is None]
    return Section(title, "\n".join(body), len(parts) - len(missing), missing)


def _validation(reports: Path, gx_docs: Path) -> Section:
    page = reports / VALIDATION_FILE
    return _section("Validation", [
        ("recloop validation report", f"<p>{_link(page, reports)}: checks, counts and quarantine reasons</p>"
         if page.exists() else None, "dvc repro validate"),
        ("Great Expectations Data Docs", f"<p>{_link(gx_docs, reports, 'Data Docs')}: suites and checkpoint runs</p>"
         if gx_docs.exists() else None, "dvc repro validate"),
    ])


def _history(path: Path) -> list[tuple[float, float]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(float(row["epoch"]), float(row[HISTORY_METRIC])) for row in csv.DictReader(f)
                if row.get(HISTORY_METRIC) not in (None, "")]


def history_svg(series: dict[str, list[tuple[float, float]]], width: int = 480, height: int = 180) -> str:
    """A small inline chart of (epoch, value) series: a line and dots each, the y range labelled."""
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    x_max = max(x for x, _ in points) or 1.0
    y_min, y_max = min(y for _, y in points), max(y for _, y in points)
    span, pad = (y_max - y_min) or 1.0, 30

    def xy(x: float, y: float) -> tuple[str, str]:
        return (f"{pad + x / x_max * (width - 2 * pad):.1f}",
                f"{height - pad - (y - y_min) / span * (height - 2 * pad):.1f}")

    colours = ["#1f77b4", "#d62728", "#2ca02c"]
    marks = []
    for i, (name, s) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        line = " ".join(",".join(xy(x, y)) for x, y in s)
        # Dots as well as the line: a one-epoch run has no line to draw.
        dots = "".join(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>' for cx, cy in (xy(x, y) for x, y in s))
        marks.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"><title>'
                     f'{escape(name)}</title></polyline>{dots}<text x="{width - pad}" y="{14 + 14 * i}" '
                     f'text-anchor="end" fill="{colour}">{escape(name)}</text>')
    axes = (f'<text x="2" y="{pad}">{y_max:.4f}</text><text x="2" y="{height - pad}">{y_min:.4f}</text>'
            f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">epoch {x_max:g}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{HISTORY_METRIC} by epoch">'
            f"{axes}{''.join(marks)}</svg>")


def _training(reports: Path) -> Section:
    series, parts = {}, []
    for stage, name in HISTORY_FILES.items():
        path = reports / name
        html = None
        if path.exists():
            series[stage] = _history(path)
            best = max(series[stage], key=lambda p: p[1], default=None)
            html = (f"<p>{stage}: {_link(path, reports)}"
                    + (f", best {HISTORY_METRIC} {best[1]:.4f} at epoch {best[0]:g} of {series[stage][-1][0]:g}"
                       if best else "") + "</p>")
        parts.append((f"{stage} history", html, f"dvc repro {stage}"))
    section = _section("Training", parts)
    chart = history_svg(series)
    if chart:
        section.html = f"<p>{HISTORY_METRIC} by epoch (epoch 0: before training)</p>{chart}\n{section.html}"
    return section


def _metrics_table(metrics: dict) -> str:
    models = {m: v for m, v in metrics.items() if isinstance(v, dict) and any(k in v for k in HEADLINE_METRICS)}
    if not models:
        return ""
    columns = [k for k in HEADLINE_METRICS if any(k in v for v in models.values())]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = "".join(f"<tr><td>{escape(m)}</td>" + "".join(
        f"<td>{v[c]:.4f}</td>" if isinstance(v.get(c), (int, float)) else "<td></td>" for c in columns) + "</tr>"
        for m, v in models.items())
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>"


def _evaluation(reports: Path) -> Section:
    report, assets = reports / EVALUATION_FILE, reports / EVALUATION_ASSETS
    html = None
    if report.exists():
        metrics = _read_json(reports / METRICS_FILE)
        charts = sorted(assets.glob("*.png")) if assets.is_dir() else []
        html = (f"<p>{_link(report, reports)}: metrics, slices and baselines "
                f"(also {_code('dvc metrics show')}, {_code('dvc plots show')})</p>"
                + (_metrics_table(metrics) if isinstance(metrics, dict) else "")
                + "".join(f'<figure><img src="{escape(Path(os.path.relpath(c, reports)).as_posix())}" '
                          f'alt="{escape(c.stem)}" width="480"><figcaption>{escape(c.stem)}</figcaption></figure>'
                          for c in charts))
    return _section("Evaluation", [("evaluation report", html, "dvc repro evaluate")])


def _reasons(reasons: list) -> str:
    return "<ul>" + "".join(f"<li>{escape(str(r))}</li>" for r in reasons) + "</ul>"


def _monitoring(reports: Path) -> Section:
    folder = reports / MONITORING_DIR
    latest = _read_json(folder / LATEST_VERDICT)
    html = None
    if isinstance(latest, dict) and isinstance(latest.get("verdict"), dict):
        verdict = latest["verdict"]
        page = Path(latest["report"]) if latest.get("report") else None
        page = folder / page.name if page is not None and (folder / page.name).exists() else None
        older = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
        older = [p for p in older if p != page][:MAX_LISTED]
        html = (f"<p>Latest run {escape(str(latest.get('run', '')))}: <strong>"
                f"{'DRIFT: retrain' if verdict.get('drift') else 'no drift: keep the champion'}</strong>"
                + (f" ({_link(page, reports, 'Evidently report')})" if page else "") + "</p>"
                + _reasons(verdict.get("reasons", []))
                + (f"<p>Earlier reports: {', '.join(_link(p, reports) for p in older)}</p>" if older else ""))
    return _section("Monitoring", [("drift monitor", html, "recloop monitor")])


def _continual(reports: Path) -> Section:
    folder = reports / CONTINUAL_DIR
    runs = sorted(folder.glob("*.json"), reverse=True)[:MAX_LISTED] if folder.is_dir() else []
    rows = []
    for path in runs:
        gate = _read_json(path)
        if not isinstance(gate, dict) or not isinstance(gate.get("window"), dict):
            continue
        page = path.with_suffix(".md")
        scores = "".join(f"<td>{s.get('champion', nan):.4f} &rarr; {s.get('challenger', nan):.4f}</td>"
                         for s in (gate["window"], gate.get("guard") or {}))
        rows.append(f"<tr><td>{_link(page if page.exists() else path, reports, path.stem)}</td>"
                    f"<td><strong>{'promoted' if gate.get('promote') else 'refused'}</strong></td>{scores}"
                    f"<td>{escape('; '.join(map(str, gate.get('reasons', []))))}</td></tr>")
    html = ("<table><tr><th>run</th><th>gate</th><th>new window NDCG@10 champion &rarr; challenger</th>"
            "<th>guard NDCG@10</th><th>reasons</th></tr>" + "".join(rows) + "</table>") if rows else None
    return _section("Continual retraining", [("gated retrain", html, "recloop retrain")])


def _tools(params: Params) -> Section:
    tracking = params.tracking.uri or params.registry.uri
    commands = [
        ("MLflow: training, evaluation and gate runs, the model registry",
         f"mlflow ui --backend-store-uri {tracking}", "http://127.0.0.1:5000"),
        ("Prefect: flow runs, schedules, artifacts", "prefect server start", "http://127.0.0.1:4200"),
        ("Evidently: the monitoring dashboard over every run",
         f"evidently ui --workspace {params.monitor.workspace}", "http://127.0.0.1:8000"),
        ("BentoML: the service (champion from the registry; recloop promote first)",
         "bentoml serve components.serving.service:RecloopService --port 3000", "http://127.0.0.1:3000"),
        ("DVC: metrics and plots across experiments", "dvc exp show; dvc plots show", "dvc_plots/index.html"),
    ]
    rows = "".join(f"<tr><td>{escape(what)}</td><td>{_code(cmd)}</td><td>{escape(url)}</td></tr>"
                   for what, cmd, url in commands)
    return Section("Tools", f"<p>Run from the project folder:</p><table>{rows}</table>", len(commands))


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
         "text-align:left}.missing{color:#888}code{background:#f4f4f4;padding:0 .2rem}"
         "figure{display:inline-block;margin:.5rem}")


INTRO = (f"{_code('make run')} builds the pipeline's reports; {_code('make loop')} then monitors the live window, "
         f"retrains and gates; {_code('recloop report')} rebuilds this page.")


def render(sections: list[Section]) -> str:
    body = "\n".join(f"<section><h2>{escape(s.title)}</h2>\n{s.html}</section>" for s in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>recloop reports</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>recloop reports</h1>\n<p>{INTRO}</p>\n{body}\n</body></html>\n")


def write_index(params: Params, gx_docs: Path = GX_DATA_DOCS) -> IndexSummary:
    """Write `<paths.reports>/index.html` from the reports there now; `gx_docs` is the GX Data Docs page."""
    reports = Path(params.paths.reports)
    sections = [_validation(reports, Path(gx_docs)), _training(reports), _evaluation(reports),
                _monitoring(reports), _continual(reports), _tools(params)]
    path = reports / INDEX_FILE
    write_text(path, render(sections))
    missing = [m for s in sections for m in s.missing]
    return IndexSummary(path, [s.title for s in sections if s.found], missing)
