"""`recloop ope`'s library function on a real SQLite feedback log: the champion's own greedy lists
evaluated for a greedy challenger give back the logged value; an exploring one halves IPS."""
from pathlib import Path

import continual_data as c
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from components.cli import cli
from components.config import ExplorationConfig, PolicyConfig
from components.errors import RecloopError
from components.models.artifacts import save_trained
from components.policy.feedback_ope import _scores, logged_lists, ope_compare
from components.serving.feedback import FeedbackLog, feedback_interactions, read_feedback

K = 5
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    data = c.base()
    users = data.users["user_id"].astype(str).tolist()[:30]
    requests = pd.DataFrame({"request_id": [f"r{i}" for i in range(30)], "user_id": users,
                             "item_id": data.items["item_id"].iloc[0], "timestamp": c.CUTOFF + 60 * np.arange(30)})
    scores = _scores(data, c.champion(), requests, None, pd.Index(data.users["user_id"].astype(str)), 0)
    rows = []
    for i, req in requests.iterrows():
        top = np.argsort(-scores[i], kind="stable")[:K]
        for rank, item in enumerate(data.items["item_id"].to_numpy()[top], start=1):
            base = {"request_id": req.request_id, "user_id": req.user_id, "item_id": item,
                    "timestamp": int(req.timestamp)}
            rows.append({**base, "rank": rank, "score": 0.0, "event": "impression", "value": 1.0, "source": "server"})
            if (i + rank) % 4 == 0:
                rows.append({**base, "event": "click", "value": 1.0, "source": "client"})
    rows.append({"request_id": "x", "user_id": "nobody", "item_id": "1", "timestamp": c.CUTOFF, "rank": 1,
                 "event": "impression", "value": 1.0, "source": "server"})
    path = tmp_path_factory.mktemp("log") / "feedback.db"
    log = FeedbackLog(path).open()
    log.append(rows)
    log.close()
    return path


def test_a_greedy_challenger_on_its_own_greedy_log_gets_the_logged_value(log_path):
    frame = read_feedback(log_path)
    cfg = PolicyConfig(reward_events=["click"], bootstrap=50)
    result = ope_compare(cfg, frame, c.base(), c.champion(), feedback_interactions(frame), candidates=20)
    assert result.requests == 30 and result.skipped == 1
    for metric in ("click_rate", "click_dcg"):
        champion, challenger = result.estimate(metric)
        assert champion > 0 and challenger == pytest.approx(champion)
        assert result.challenger[metric].support == pytest.approx(1.0)
    assert "click_rate" in result.describe()


def test_an_exploring_challenger_shows_the_logged_items_less_often(log_path, tmp_path):
    frame = read_feedback(log_path)
    cfg = PolicyConfig(reward_events=["click"], bootstrap=50, target=ExplorationConfig(kind="epsilon", epsilon=0.5))
    result = ope_compare(cfg, frame, c.base(), c.champion(), None, candidates=20, report_dir=tmp_path)
    rate = result.challenger["click_rate"]
    assert rate.estimates["ips"].value == pytest.approx(0.5 * result.champion["click_rate"].value)
    assert rate.estimates["snips"].value == pytest.approx(result.champion["click_rate"].value)
    assert rate.support == pytest.approx(0.5)
    assert (tmp_path / "ope.json").exists() and "| click_rate |" in (tmp_path / "ope.md").read_text()


def test_a_log_without_served_lists_is_a_clear_error():
    empty = pd.DataFrame({"request_id": ["a"], "user_id": ["1"], "item_id": ["1"], "rank": [None], "timestamp": [0],
                          "event": ["click"], "source": ["client"]})
    with pytest.raises(RecloopError, match="no served impressions"):
        logged_lists(empty, ["click"])


def test_recloop_ope_reads_the_log_and_writes_its_report(log_path, tmp_path):
    data, split = c.base(), tmp_path / "split"
    split.mkdir()
    for part in ("train", "valid", "test"):
        getattr(data, part).drop(columns=["user_idx", "item_idx"]).to_parquet(split / f"{part}.parquet")
    data.items.to_parquet(split / "items.parquet")
    data.users.to_parquet(split / "users.parquet")
    save_trained(c.champion(), tmp_path / "models" / "finetuned", {})
    result = CliRunner().invoke(cli, ["ope", "--params", str(REPO / "params.yaml"), "--feedback", str(log_path),
                                      "--set", f"paths.split={split}", "--set", f"paths.models={tmp_path / 'models'}",
                                      "--set", f"paths.reports={tmp_path / 'reports'}", "--set", "serve.candidates=20",
                                      "--set", "policy.reward_events=[click]", "--set", "policy.bootstrap=50"])
    assert result.exit_code == 0, result.output
    assert "click_dcg: champion (logged)" in result.output
    assert (tmp_path / "reports" / "ope" / "ope.json").exists()
    missing = CliRunner().invoke(cli, ["ope", "--params", str(REPO / "params.yaml"),
                                       "--feedback", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "error:" in missing.output
