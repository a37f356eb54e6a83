"""The drift decision on real MovieLens windows: no drift within a period, drift across 15 years,
nothing on tiny windows, one trigger per cooldown."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from monitoring_data import write

from components.config import MonitorConfig
from components.monitoring.monitor import MonitorSummary, monitor
from components.monitoring.policy import TRIGGERS_FILE, decide


def test_a_real_shift_triggers_and_names_its_signals(shift: tuple[MonitorConfig, Path, MonitorSummary]) -> None:
    _, _, summary = shift
    verdict = summary.verdict
    assert verdict.drift
    fired = {name for name, s in verdict.signals.items() if s.fired and s.decides}
    assert fired >= {"data_drift", "unseen_items", "text_drift"}
    reasons = "\n".join(verdict.reasons)
    # The rating scale moved from whole to half stars in 2003; the catalog moved on.
    assert "value (jensenshannon" in reasons and "item_popularity" in reasons
    assert "unseen items" in reasons and "text drift" in reasons
    assert verdict.signals["unseen_items"].value > 0.5
    assert verdict.current.start.startswith("2015-01-01") and verdict.reference.end.startswith("2000-12")


def test_windows_from_the_same_period_do_not_trigger(tmp_path: Path, late: pd.DataFrame, cfg: MonitorConfig,
                                                      item_vectors: dict[str, Path]) -> None:
    half = np.random.default_rng(7).random(len(late)) < 0.5
    summary = monitor(cfg, write(late[half], tmp_path / "a.parquet"), write(late[~half], tmp_path / "b.parquet"),
                      tmp_path / "reports", **item_vectors)
    signals = summary.verdict.signals
    assert not summary.verdict.drift
    assert summary.verdict.reasons == ["no deciding signal crossed its threshold"]
    # Each signal was measured on enough rows to count, and stayed far from its threshold.
    assert signals["data_drift"].value == 0
    assert signals["text_drift"].value == 0 and "fewer than" not in signals["text_drift"].detail
    assert signals["unseen_items"].value < cfg.max_unseen_items
    assert not (tmp_path / "reports" / TRIGGERS_FILE).exists()


def test_small_windows_do_not_trigger_on_noise(tmp_path: Path, late: pd.DataFrame, cfg: MonitorConfig) -> None:
    rows = np.random.default_rng(3).permutation(len(late))
    summary = monitor(cfg, write(late.iloc[rows[:150]], tmp_path / "a.parquet"),
                      write(late.iloc[rows[150:300]], tmp_path / "b.parquet"), tmp_path / "reports")
    # 150 interactions against 150 of the same period: distances this noisy cross thresholds...
    assert summary.verdict.signals["data_drift"].fired
    # ...which is why the policy does not judge windows this small.
    assert not summary.verdict.drift
    assert summary.verdict.reasons == [
        f"{side} window has 150 interactions, fewer than monitor.min_interactions={cfg.min_interactions}: "
        "too small to judge" for side in ("reference", "current")]


def test_the_cooldown_suppresses_a_second_trigger(shift: tuple[MonitorConfig, Path, MonitorSummary],
                                                  late: pd.DataFrame) -> None:
    cfg, folder, first = shift
    # 2018 alone ends with 2015-2018, the window that just triggered.
    last_year = late[late["timestamp"] >= first.verdict.current.end_ts - 200 * 86_400]
    second = monitor(cfg, folder / "early.parquet", write(last_year, folder / "2018.parquet"), folder / "reports")
    assert not second.verdict.drift
    assert second.verdict.reasons[-1].startswith("cooldown: the last trigger was for a window ending 0.0 days")
    assert second.verdict.signals["data_drift"].fired
    # The same signals, a window ending past the cooldown, trigger again.
    later = first.verdict.current.end_ts + int(cfg.cooldown_days * 86_400) + 1
    past_cooldown = replace(second.verdict.current, end_ts=later)
    assert decide(second.verdict.signals, cfg, second.verdict.reference, past_cooldown,
                  first.verdict.current.end_ts).drift
