"""The drift decision: turn a run's measurements into a verdict with its reasons (policy in `monitor:` params).

Each signal is measured, compared with its threshold and marked `fired`; only the signals listed in
`monitor.signals` can call for a retrain. A verdict of drift also needs both windows to hold at
least `monitor.min_interactions` interactions (distances between small samples are mostly noise)
and the current window to end more than `monitor.cooldown_days` after the last trigger (recorded in
`triggers.json` beside the reports), so that one shift asks for one retrain, not one per window.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from components.atomic import write_json
from components.config import MonitorConfig
from components.monitoring.report import ColumnDrift, Measurements
from components.monitoring.window_features import SECONDS_PER_DAY, WindowInfo

TRIGGERS_FILE = "triggers.json"


@dataclass
class Signal:
    """One measured signal: its value against its threshold, and a line a person can read."""

    value: float | None
    threshold: float | None
    fired: bool
    decides: bool
    detail: str


@dataclass
class Verdict:
    """Whether to retrain, why, and everything measured (plain data: it travels in events and JSON)."""

    drift: bool
    reasons: list[str]
    signals: dict[str, Signal]
    reference: WindowInfo
    current: WindowInfo

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        """The verdict, its reasons and every signal as Markdown (the head of the Evidently report)."""
        lines = ["**DRIFT: retrain** (a continual fine-tune of the champion, then its gate)" if self.drift else
                 "**No drift: keep the champion**", "", "Reasons:", ""]
        lines += [f"- {reason}" for reason in self.reasons]
        lines += ["", "Signals (only those marked *decides* can call for a retrain, `monitor.signals`):", ""]
        for name, s in self.signals.items():
            state = ("**fired**" if s.fired else "quiet") + (", *decides*" if s.decides else "")
            lines.append(f"- {name}: {state}: {s.detail}")
        lines += ["", *(f"- {name}: {info.interactions:,} interactions, {info.start} .. {info.end}"
                        for name, info in (("reference", self.reference), ("current", self.current)))]
        return "\n".join(lines)


def _share(name: str, columns: dict[str, ColumnDrift], cfg: MonitorConfig, what: str = "columns") -> Signal:
    """A drift-share signal: fires when at least `monitor.drift_share` of the columns drifted."""
    drifted = [c for c, d in columns.items() if d.drifted]
    value = len(drifted) / len(columns)
    listed = ", ".join(f"{c} ({columns[c].method} {columns[c].score:.3f} vs {columns[c].threshold:g})"
                       for c in drifted) or "none"
    return Signal(value, cfg.drift_share, value >= cfg.drift_share, False,
                  f"{name}: {len(drifted)} of {len(columns)} {what} drifted: {listed}")


def _unseen(what: str, value: float | None, limit: float) -> Signal:
    if value is None:
        return Signal(None, limit, False, False, f"unseen {what}: not measured")
    return Signal(value, limit, value > limit, False, f"unseen {what}: {value:.1%} of current interactions are "
                  f"on {what} the reference never saw (limit {limit:.0%})")


def _text(measured: Measurements, cfg: MonitorConfig) -> Signal:
    if not measured.text:
        return Signal(None, cfg.drift_share, False, False, "text drift: not measured (no item text vectors)")
    signal = _share("text drift", measured.text, cfg, "text components")
    if measured.text_rows < cfg.min_interactions:
        # Like a small window: too few interactions on items with text for the components to mean much.
        signal.fired = False
        signal.detail += (f"; only {measured.text_rows} current interactions are on items with text, fewer than "
                          f"monitor.min_interactions={cfg.min_interactions}")
    return signal


def _quality(measured: Measurements, cfg: MonitorConfig) -> Signal:
    ndcg, reference = measured.quality.get("ndcg"), measured.reference_quality.get("ndcg")
    if ndcg is None:
        return Signal(None, None, False, False, "quality: not measured (no served lists with outcomes)")
    if reference is None:
        return Signal(ndcg, None, False, False, f"quality: NDCG@{cfg.k} {ndcg:.4f} (no reference feedback "
                                                "with outcomes to compare with)")
    floor = (1 - cfg.max_ndcg_drop) * reference
    return Signal(ndcg, floor, ndcg < floor, False, f"quality: NDCG@{cfg.k} {ndcg:.4f} vs reference "
                                                   f"{reference:.4f} (fires below {floor:.4f})")


def read_signals(measured: Measurements, cfg: MonitorConfig) -> dict[str, Signal]:
    """Every signal, measured or not (one not measured never fires; its detail says why)."""
    signals = {
        "data_drift": (_share("data drift", measured.columns, cfg) if measured.columns else
                       Signal(None, cfg.drift_share, False, False, "data drift: not measured")),
        "unseen_items": _unseen("items", measured.unseen_items, cfg.max_unseen_items),
        "unseen_users": _unseen("users", measured.unseen_users, cfg.max_unseen_users),
        "text_drift": _text(measured, cfg),
        "prediction_drift": (_share("prediction drift", measured.predictions, cfg) if measured.predictions else
                             Signal(None, cfg.drift_share, False, False,
                                    "prediction drift: not measured (no served rows on both sides)")),
        "quality": _quality(measured, cfg),
    }
    for name, signal in signals.items():
        signal.decides = name in cfg.signals
    return signals


def decide(signals: dict[str, Signal], cfg: MonitorConfig, reference: WindowInfo, current: WindowInfo,
           last_trigger_ts: int | None) -> Verdict:
    """The verdict: drift when a deciding signal fired on big enough windows, outside the cooldown."""
    def verdict(drift: bool, reasons: list[str]) -> Verdict:
        return Verdict(drift, reasons, signals, reference, current)

    small = [f"{name} window has {info.interactions} interactions, fewer than monitor.min_interactions="
             f"{cfg.min_interactions}: too small to judge" for name, info in (("reference", reference),
                                                                              ("current", current))
             if info.interactions < cfg.min_interactions]
    if small:
        return verdict(False, small)
    fired = [s.detail for s in signals.values() if s.fired and s.decides]
    if not fired:
        return verdict(False, ["no deciding signal crossed its threshold"])
    if last_trigger_ts is not None and current.end_ts is not None:
        days = (current.end_ts - last_trigger_ts) / SECONDS_PER_DAY
        if days < cfg.cooldown_days:
            cooldown = (f"cooldown: the last trigger was for a window ending {days:.1f} days before this one, "
                        f"within monitor.cooldown_days={cfg.cooldown_days:g}")
            return verdict(False, [*fired, cooldown])
    return verdict(True, fired)


def last_trigger(report_dir: Path) -> int | None:
    """End (epoch seconds) of the latest window that triggered, from `triggers.json`; None if none did."""
    path = Path(report_dir) / TRIGGERS_FILE
    if not path.exists():
        return None
    ends = [t["window_end_ts"] for t in json.loads(path.read_text())]
    return max(ends) if ends else None


def record_trigger(report_dir: Path, run: str, verdict: Verdict) -> None:
    """Append a drift verdict to `triggers.json` (atomically), so the cooldown sees it next time."""
    path = Path(report_dir) / TRIGGERS_FILE
    triggers = json.loads(path.read_text()) if path.exists() else []
    triggers.append({"run": run, "window_end_ts": verdict.current.end_ts, "window_end": verdict.current.end,
                     "reasons": verdict.reasons})
    write_json(path, triggers)
