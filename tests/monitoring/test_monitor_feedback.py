"""Prediction drift and served-list quality from a real feedback log (the service's SQLite file),
replayed on MovieLens: a new-releases list fit on 1996-1999 serves users of 2000, and is still
serving, unchanged, the users of 2017-2018."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from monitoring_data import popularity_log, release_years, write, years

from components.config import LabelsConfig, MonitorConfig
from components.monitoring.monitor import monitor
from components.serving.feedback import FeedbackLog

MOVIES = Path(__file__).resolve().parents[2] / "data/raw/ml-latest-small/movies.csv"


def _write_log(log: pd.DataFrame, path: Path) -> Path:
    feedback = FeedbackLog(path).open()
    feedback.append(log.astype(object).where(log.notna(), None).to_dict("records"))
    feedback.close()
    return path


def test_a_stale_recommender_loses_quality_but_serves_the_same(tmp_path: Path, ratings: pd.DataFrame,
                                                               cfg: MonitorConfig,
                                                               item_vectors: dict[str, Path]) -> None:
    train, late = years(ratings, 1996, 1999), years(ratings, 2017, 2018)
    new_releases = train[train["item_id"].map(release_years(MOVIES)) >= 1998]
    then, now = popularity_log(years(ratings, 2000, 2000), new_releases), popularity_log(late, new_releases)
    # One log: what was served before the current window starts is the reference.
    db = _write_log(pd.concat([then, now], ignore_index=True), tmp_path / "feedback.db")
    summary = monitor(cfg, write(train, tmp_path / "train.parquet"), write(late, tmp_path / "late.parquet"),
                      tmp_path / "reports", feedback=db, **item_vectors)
    signals, measured = summary.verdict.signals, summary.measurements

    assert signals["quality"].fired and signals["quality"].decides
    assert measured.quality["ndcg"] < (1 - cfg.max_ndcg_drop) * measured.reference_quality["ndcg"]
    assert any(r.startswith("quality: NDCG@10") for r in summary.verdict.reasons)
    # The lists did not change, so what was served did not drift: only the users did.
    assert set(measured.predictions) == {"score", "like_prob", "rec_popularity"}
    assert signals["prediction_drift"].value == 0 and not signals["prediction_drift"].fired

    # Evidently's hit rate (all lists counted) is the share of requests with a liked served item.
    liked = now[(now["source"] == "client") & (now["value"] >= LabelsConfig().like_threshold)]
    served = now[now["source"] == "server"]
    hits = served.merge(liked[["request_id", "item_id"]].drop_duplicates())["request_id"].nunique()
    assert abs(measured.quality["hit_rate"] - hits / served["request_id"].nunique()) < 1e-9
    assert {"mrr", "novelty", "popularity_bias", "diversity"} <= set(measured.quality)
    assert "NDCG" in Path(summary.report).read_text()
