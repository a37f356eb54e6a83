"""What a flow run leaves in the Prefect UI: the stages' metrics as a table, the reports as links."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.stage_runs import Job, StageOutcome


def _flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics JSON under dotted keys (`test.ndcg@10`); text and lists are left out."""
    if isinstance(value, dict):
        flat: dict[str, float] = {}
        for key, child in value.items():
            flat.update(_flatten(child, f"{prefix}{key}."))
        return flat
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix.rstrip("."): value}
    return {}


def metric_rows(jobs: dict[str, Job]) -> list[dict[str, Any]]:
    """(dataset,) stage, metric, value rows from every metrics file the jobs' stages declare."""
    rows = []
    for name, job in jobs.items():
        for stage in job.stages:
            for path in map(Path, stage.metrics):
                if not path.exists():
                    continue
                for metric, value in _flatten(json.loads(path.read_text())).items():
                    rows.append(({"dataset": name} if name else {})
                                | {"stage": stage.name, "metric": metric, "value": value})
    return rows


def report_markdown(title: str, jobs: dict[str, Job], outcomes: dict[str, list[StageOutcome]]) -> str:
    lines = [f"# {title}", "", "| stage | this run | outputs (hash in dvc.lock) |", "| --- | --- | --- |"]
    for name, stage_outcomes in outcomes.items():
        for o in stage_outcomes:
            outputs = "<br>".join(f"`{path}` {(digest or 'not in dvc.lock')[:12]}"
                                  for path, digest in o.outputs.items())
            lines.append(f"| {name + '/' if name else ''}{o.stage} | "
                         f"{'skipped (unchanged)' if o.skipped else 'ran'} | {outputs} |")
    lines += ["", "## Reports", ""]
    for job in jobs.values():
        for path in (Path(p) for stage in job.stages for p in stage.reports):
            if path.exists():
                lines.append(f"- [{path}]({path.resolve().as_uri()})")
    return "\n".join(lines)


def publish(key: str, title: str, jobs: dict[str, Job], outcomes: dict[str, list[StageOutcome]]) -> None:
    """A `<key>-metrics` table artifact and a `<key>-reports` markdown artifact (keys: lowercase and dashes)."""
    rows = metric_rows(jobs)
    if rows:
        create_table_artifact(rows, key=f"{key}-metrics", description=f"{title}: metrics of every stage")
    create_markdown_artifact(report_markdown(title, jobs, outcomes), key=f"{key}-reports",
                             description=f"{title}: what ran, what was skipped, where the reports are")
