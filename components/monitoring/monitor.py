"""The monitor stage: compare a current window with the reference, write the Evidently report, decide.

Inputs are canonical interaction tables: the reference (what the champion was trained on,
`data/split/train.parquet`) and the current window (a live batch, `data/split/live/window_NNN.parquet`).
Optional: the serving feedback log (prediction drift and served-list quality, see
`components/monitoring/feedback.py`) and the item text vectors (text-embedding drift).

Outputs, in `report_dir` (reports/monitoring/): `<run>.html` (the whole Evidently report),
`<run>.json` and `latest.json` (the verdict and every signal), `triggers.json` (drift verdicts, for
the cooldown); and one run in the Evidently workspace's project (`monitor.workspace`).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from evidently.core.report import Snapshot
from tqdm import tqdm

from components.atomic import replaced, write_json
from components.config import LabelsConfig, MonitorConfig
from components.data.schema import ITEMS_FILE
from components.data.split import LIVE_DIR
from components.errors import RecloopError
from components.features.featurize import TEXT_VECTORS_FILE
from components.monitoring import feedback as fb
from components.monitoring.dashboard import add_run
from components.monitoring.off_policy import Estimator, off_policy_part
from components.monitoring.policy import Verdict, decide, last_trigger, read_signals, record_trigger
from components.monitoring.report import Measurements, interactions_part, merge, predictions_part, quality_part
from components.monitoring.text import ItemVectors, text_components
from components.monitoring.window_features import check_interactions, window_features, window_info

LATEST_FILE = "latest.json"


@dataclass
class MonitorSummary:
    """One monitoring run: the verdict (with window bounds and signals) and where its outputs went."""

    run: str
    verdict: Verdict
    report: str | None
    verdict_file: str
    snapshot_id: str | None
    workspace: str
    measurements: Measurements

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        v = self.verdict
        lines = [f"monitor {self.run}: {'DRIFT, retrain' if v.drift else 'no drift'}",
                 f"  reference {v.reference.interactions:,} interactions ({v.reference.start} .. {v.reference.end})",
                 f"  current   {v.current.interactions:,} interactions ({v.current.start} .. {v.current.end})"]
        lines += [f"  - {reason}" for reason in v.reasons]
        lines += [f"  note: {note}" for note in self.measurements.notes]
        if self.report:
            lines.append(f"  report {self.report}; workspace {self.workspace} (run {self.snapshot_id})")
        lines.append(f"  verdict {self.verdict_file}")
        return "\n".join(lines)


def default_inputs(split_dir: Path, features_dir: Path, reference: Path | None = None,
                   current: Path | None = None) -> dict[str, Path | None]:
    """`monitor` inputs from the pipeline's outputs, for those not given: the training split as
    reference, the newest live window as current, and the item text vectors when featurize wrote them.
    """
    split_dir, features_dir = Path(split_dir), Path(features_dir)
    vectors, items = features_dir / TEXT_VECTORS_FILE, split_dir / ITEMS_FILE
    found = vectors.exists() and items.exists()
    return {"reference": reference or split_dir / "train.parquet",
            "current": current or latest_live_window(split_dir),
            "item_vectors": vectors if found else None, "items": items if found else None}


def latest_live_window(split_dir: Path) -> Path:
    """The newest `live/window_NNN.parquet` the split stage wrote."""
    windows = list((Path(split_dir) / LIVE_DIR).glob("window_*.parquet"))
    if not windows:
        raise RecloopError(f"no live windows in {Path(split_dir) / LIVE_DIR}: set split.time.cutoff and run "
                           "`recloop split`, or pass --current")
    return max(windows, key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def _read(path: Path, name: str) -> pd.DataFrame:
    if not Path(path).exists():
        raise RecloopError(f"{name} interactions {path} do not exist: run `recloop split`, or pass --{name}")
    return check_interactions(pd.read_parquet(path), f"{name} interactions {path}").reset_index(drop=True)


def _feedback(cfg: MonitorConfig, labels: LabelsConfig, feedback: Path, reference_feedback: Path | None,
              split_at: int, reference: pd.DataFrame, item_vectors: ItemVectors | None, seed: int,
              measured: Measurements, off_policy: Estimator | None = None) -> list[tuple[str, Snapshot]]:
    """Prediction drift and quality parts from the feedback log(s).

    Without a separate reference log, the one log is cut at the current window's start: what was
    served before it is the reference.
    """
    log = fb.read_feedback_log(feedback)
    if reference_feedback is not None:
        ref_log = fb.read_feedback_log(reference_feedback)
    else:
        before = log["timestamp"] < split_at
        ref_log, log = log[before], log[~before]
    parts = []
    served, ref_served = fb.served(log), fb.served(ref_log)
    item_counts = reference["item_id"].value_counts()
    if len(served) and len(ref_served):
        snapshot = predictions_part(fb.prediction_features(ref_served, item_counts),
                                    fb.prediction_features(served, item_counts), cfg, measured)
        if snapshot is not None:
            parts.append(("Prediction drift: served scores, like probabilities, popularity", snapshot))
    else:
        measured.notes.append("prediction drift: needs served rows in both the reference and the current feedback")
    estimate = None if off_policy is None or not len(served) else off_policy(log)
    if estimate is not None:
        parts.append((f"Off-policy estimate ({estimate['metric']} per list)", off_policy_part(estimate)))
        measured.notes.append(f"off-policy {estimate['metric']}: logged {estimate['ope_logged']:.4f}, champion under "
                              f"policy.target {estimate['ope_estimate']:.4f} [{estimate['ope_low']:.4f}, "
                              f"{estimate['ope_high']:.4f}] ({estimate['lists']} lists)")
    if not (len(served) and fb.has_outcomes(log)):
        measured.notes.append("quality: the current feedback has no served lists with outcomes")
        return parts
    lists = fb.ranking_frame(log, labels.like_threshold, cfg.max_requests, seed)
    ref_lists = (fb.ranking_frame(ref_log, labels.like_threshold, cfg.max_requests, seed)
                 if len(ref_served) and fb.has_outcomes(ref_log) else None)
    components = None if item_vectors is None else text_components(item_vectors, reference, lists,
                                                                    cfg.text_components)
    quality = quality_part(lists, ref_lists, reference, None if components is None else components[1],
                           cfg, measured)
    parts += [(f"Served-list quality at {cfg.k}", s) for s in quality]
    return parts


def _publish(parts: list[tuple[str, Snapshot]], run: str, verdict: Verdict, cfg: MonitorConfig,
             report_dir: Path, metadata: dict[str, str]) -> tuple[Path, str]:
    """One merged snapshot, headed by the verdict: saved as HTML and added to the workspace project."""
    when = datetime.fromtimestamp(verdict.current.end_ts, UTC).replace(tzinfo=None)
    snapshot = merge(parts, run, when, {**metadata, "run": run, "drift": str(verdict.drift).lower(),
                                        "verdict": "retrain" if verdict.drift else "keep"},
                     ["monitor", "drift" if verdict.drift else "no-drift"], verdict.to_markdown())
    html = report_dir / f"{run}.html"
    with replaced(html) as tmp:
        snapshot.save_html(str(tmp))
    return html, add_run(cfg.workspace, cfg, snapshot)


def monitor(cfg: MonitorConfig, reference: Path, current: Path, report_dir: Path, *,
            feedback: Path | None = None, reference_feedback: Path | None = None,
            item_vectors: Path | None = None, items: Path | None = None, seed: int = 42,
            labels: LabelsConfig = LabelsConfig(), off_policy: Estimator | None = None) -> MonitorSummary:
    """Compare `current` with `reference`, write the report and the verdict, add a workspace run.

    `feedback` (and optionally `reference_feedback`) is a feedback log; `item_vectors` with `items`
    are the featurize stage's text vectors and the items table they follow. A served item counts as
    liked when its feedback is a rating at or above `labels.like_threshold`. `off_policy` turns the
    current feedback into an off-policy estimate (components/monitoring/off_policy.py) where it can.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    ref, cur = _read(reference, "reference"), _read(current, "current")
    ref_info, cur_info = window_info(ref), window_info(cur)
    vectors = ItemVectors.load(item_vectors, items) if item_vectors is not None else None
    run = f"{Path(current).stem}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    measured = Measurements()
    parts: list[tuple[str, Snapshot]] = []
    html, snapshot_id = None, None
    with tqdm(total=3, desc="monitor", unit="step", file=sys.stderr, leave=False) as progress:
        # Evidently needs a few rows on each side to compare at all; the policy judges whether enough.
        if len(ref) >= 2 and len(cur) >= 2:
            text = None if vectors is None else text_components(vectors, ref, cur, cfg.text_components)
            if vectors is not None and text is None:
                measured.notes.append("text drift: too few reference items have text vectors")
            parts.append(("Data drift: interactions of the current window vs the reference",
                          interactions_part(window_features(ref, cur), text, cfg, measured)))
            progress.update()
            if feedback is not None:
                parts += _feedback(cfg, labels, feedback, reference_feedback, cur_info.start_ts, ref, vectors, seed,
                                   measured, off_policy)
            progress.update()
        verdict = decide(read_signals(measured, cfg), cfg, ref_info, cur_info, last_trigger(report_dir))
        if parts:
            html, snapshot_id = _publish(parts, run, verdict, cfg, report_dir,
                                         {"current": str(current), "reference": str(reference)})
        progress.update()
    if verdict.drift:
        record_trigger(report_dir, run, verdict)
    summary = MonitorSummary(run, verdict, None if html is None else str(html), str(report_dir / f"{run}.json"),
                             snapshot_id, str(cfg.workspace), measured)
    for path in (report_dir / f"{run}.json", report_dir / LATEST_FILE):
        write_json(path, summary.to_dict())
    return summary
