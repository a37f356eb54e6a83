"""The replay of real history on a short stretch: 2015 and 2016 after a 2015 cutoff, tiny model."""
from __future__ import annotations

import json
from datetime import date

import continual_data as c

from components.config import MonitorConfig, SimulateConfig
from components.continual.simulate import simulate
from components.data.live_windows import Stream
from components.data.sources.movielens import movielens_stream


def test_two_windows_go_through_monitor_retrain_and_gate(tmp_path):
    cfg = SimulateConfig(cutoff=date(2015, 1, 1), window_days=365, max_windows=2, retrain="drift")
    stream = Stream(c.interactions(), c.CUTOFF, cfg.window_days)
    printed = []
    summary = simulate(stream, c.movies(), c.text, model=c.TINY_MODEL, pretrain=None, finetune=c.TINY_FINETUNE,
                       continual=c.CONTINUAL, monitor_cfg=MonitorConfig(min_interactions=500), cfg=cfg,
                       work_dir=tmp_path, seed=0, on_window=printed.append, champion=c.champion())
    assert [s.index for s in summary.steps] == [0, 1] and printed == summary.steps
    first = summary.steps[0]
    assert first.interactions == len(c.window(0)) and first.new_items > 0
    # 2015 against the 1996-2014 history: the monitor calls for a retrain, and the gate answers.
    assert first.drift and first.drift_reasons and first.retrained
    assert first.challenger_ndcg is not None and len(first.gate_reasons) == 2
    for step in summary.steps:
        if step.promoted:
            assert step.challenger_ndcg > step.champion_ndcg + c.CONTINUAL.min_gain
    text = summary.describe()
    assert "window 0 2015-01-01" in text and ("PROMOTED" in text or "REFUSED" in text)
    saved = json.loads(summary.report.read_text())
    assert len(saved["steps"]) == 2 and (tmp_path / "monitoring").is_dir()
    # The monitor got the catalog's text vectors: the text-embedding signal was measured.
    latest = json.loads((tmp_path / "monitoring" / "latest.json").read_text())
    assert latest["verdict"]["signals"]["text_drift"]["value"] is not None


def test_movielens_stream_cuts_the_history_and_windows_the_rest():
    stream, catalog = movielens_stream(c.ML_SMALL, SimulateConfig(cutoff=date(2015, 1, 1), window_days=365))
    ts = stream.interactions["timestamp"]
    assert stream.cutoff == c.CUTOFF and len(stream.past) == int((ts < c.CUTOFF).sum()) > 0
    windows = list(stream.windows())
    assert sum(len(rows) for *_, rows in windows) == int((ts >= c.CUTOFF).sum())
    for k, start, end, rows in windows:
        assert start == c.CUTOFF + k * 365 * 86_400 and rows["timestamp"].between(start, end - 1).all()
    assert [w[0] for w in stream.windows(limit=2)] == [w[0] for w in windows[:2]]
    assert catalog["item_id"].is_unique and set(stream.interactions["item_id"]) <= set(catalog["item_id"])
