"""The ingest stage: read the source named in params into the canonical Parquet tables.

Outputs (in `out_dir`): interactions, items, users and quarantine Parquet files, each replaced only
once the whole source has been read, so that a failed run leaves the previous tables intact.
The report (`report_dir/ingest.json`, a DVC metric) holds the counts, the time range and notes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from components.atomic import staged_files, write_json
from components.config import IngestConfig
from components.data.sources import ADAPTERS
from components.data.schema import QUARANTINE_FILE
from components.data.sources.sink import SinkStats, SourceInfo, TableSink
from components.errors import RecloopError

REPORT_FILE = "ingest.json"


@dataclass
class IngestSummary:
    source: str
    dataset: str
    out_dir: Path
    report_path: Path
    interactions: int
    users: int
    items: int
    items_with_interactions: int
    quarantined: int
    time_min: str | None
    time_max: str | None
    notes: list[str]
    wall_seconds: float

    def describe(self) -> str:
        lines = [
            f"ingested {self.source} ({self.dataset}): {self.interactions:,} interactions, {self.users:,} users, "
            f"{self.items:,} items ({self.items_with_interactions:,} with interactions) in {self.wall_seconds:.1f} s",
            f"time range {self.time_min} .. {self.time_max}",
            f"quarantined {self.quarantined:,} rows"
            + (f" (see {self.out_dir / QUARANTINE_FILE})" if self.quarantined else ""),
            f"tables in {self.out_dir}, report {self.report_path}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _report(cfg: IngestConfig, info: SourceInfo, stats: SinkStats, wall: float) -> dict:
    # Flat: numbers at the top level or in one-level dicts, so `dvc metrics diff` can compare runs.
    return {
        "source": cfg.source,
        "dataset": info.dataset,
        "path": str(cfg.path),
        "domain": cfg.domain,
        "interactions": stats.interactions,
        "users": stats.users,
        "items": stats.items,
        "users_with_interactions": stats.users_with_interactions,
        "items_with_interactions": stats.items_with_interactions,
        "items_without_metadata": stats.items_without_metadata,
        "duplicate_items": stats.duplicate_items,
        "duplicate_users": stats.duplicate_users,
        **info.counts,
        "quarantined": sum(stats.quarantined.values()),
        "quarantined_by_reason": dict(sorted(stats.quarantined.items())),
        "time_min": _iso(stats.time_min),
        "time_max": _iso(stats.time_max),
        "synthetic_timestamps": info.synthetic_timestamps,
        "given_split": info.given_split,
        "notes": " ".join(info.notes),
        "wall_seconds": round(wall, 3),
    }


def ingest(cfg: IngestConfig, out_dir: Path, report_dir: Path) -> IngestSummary:
    """Read `cfg.source` at `cfg.path` into canonical tables in `out_dir`; write `report_dir/ingest.json`."""
    start = time.perf_counter()
    if not Path(cfg.path).exists():
        raise RecloopError(f"ingest.path {cfg.path} does not exist: point it at the {cfg.source} data")
    out_dir, report_dir = Path(out_dir), Path(report_dir)
    with staged_files(out_dir) as staging:
        with TableSink(staging, cfg.domain, cfg.only_interacted) as sink:
            info = ADAPTERS[cfg.source](cfg, sink)
            if info.complete_catalog and cfg.unknown_items == "quarantine":
                sink.quarantine_unknown_items()
            stats = sink.finish()
        if stats.interactions == 0:
            reasons = ", ".join(f"{r} ({n})" for r, n in stats.quarantined.most_common(3)) or "the source is empty"
            raise RecloopError(f"no interaction could be read from {cfg.path} as {cfg.source}: {reasons}")
    wall = time.perf_counter() - start
    report = _report(cfg, info, stats, wall)
    report_path = report_dir / REPORT_FILE
    write_json(report_path, report)
    return IngestSummary(
        source=cfg.source, dataset=info.dataset, out_dir=out_dir, report_path=report_path,
        interactions=stats.interactions, users=stats.users, items=stats.items,
        items_with_interactions=stats.items_with_interactions, quarantined=report["quarantined"],
        time_min=report["time_min"], time_max=report["time_max"], notes=info.notes, wall_seconds=wall)
