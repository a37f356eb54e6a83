"""The replay simulator on real MovieLens ratings (2015 after a 2015 cutoff, tiny model): seeded and
deterministic, clicks only on items the user really liked later, OPE of the logging policy exact."""
import continual_data as c
import numpy as np
import pandas as pd
import pytest

from components.config import ExplorationConfig, ReplayConfig
from components.data.live_windows import Stream
from components.policy.ope import evaluate, position_weights
from components.continual.policy_replay import look, open_windows, serve, target_probabilities

CFG = ReplayConfig(windows=1, max_users=25, requests_per_user=2, k=5, candidates=20, fresh_days=60)
EXPLORE = ExplorationConfig(kind="boltzmann", temperature=0.5, samples=200, fresh_share=0.2, fresh_pool=5)


@pytest.fixture(scope="module")
def window():
    stream = Stream(c.interactions(), c.CUTOFF, 365)
    return next(open_windows(stream, c.movies(), c.text, c.champion(), c.base(), CFG, seed=0))


def test_requests_come_in_time_order_with_real_relevance(window):
    reqs = window.requests
    assert 0 < len(reqs) <= 2 * 25 and len({r.user_id for r in reqs}) <= 25
    assert [r.timestamp for r in reqs] == sorted(r.timestamp for r in reqs)
    assert any(r.relevant.any() for r in reqs)
    items = window.opened.data.items["item_id"].to_numpy()
    rows = c.window(0)
    for r in reqs[:10]:
        later = rows[(rows["user_id"] == r.user_id) & (rows["timestamp"] >= r.timestamp) & (rows["value"] >= 4)]
        assert set(items[r.pool[r.relevant]]) <= set(later["item_id"])
        # No item the user had before the request, and none the catalog did not hold yet.
        before = c.interactions()
        before = before[before["timestamp"] < r.timestamp]
        assert not set(items[r.pool]) & set(before.loc[before["user_id"] == r.user_id, "item_id"])
        assert set(items[r.pool]) <= set(before["item_id"])


def test_the_replay_is_seeded_and_deterministic(window):
    a = serve(window.requests, EXPLORE, CFG, position_weights(5, "dcg"), seed=3)
    b = serve(window.requests, EXPLORE, CFG, position_weights(5, "dcg"), seed=3)
    pd.testing.assert_frame_equal(a.log, b.log)
    np.testing.assert_array_equal(a.value, b.value)
    other = serve(window.requests, EXPLORE, CFG, position_weights(5, "dcg"), seed=4)
    assert not a.log["item_idx"].equals(other.log["item_idx"])
    # Clicks only on relevant items, and only where the user looks (position 0 always).
    for req, (_, rows) in zip(window.requests, a.log.groupby("request")):
        assert (rows["reward"].to_numpy() <= req.relevant[rows["pool_index"].to_numpy()]).all()
    assert look(3, 1.0).tolist() == [1.0, 0.5, 1 / 3]


def test_ope_of_the_logging_policy_on_its_simulated_log_is_its_empirical_value(window):
    served = serve(window.requests, EXPLORE, CFG, position_weights(5, "dcg"), seed=1)
    log = target_probabilities(window.requests, served.log, EXPLORE, CFG, seed=1)
    np.testing.assert_allclose(log["target"], log["propensity"])
    result = evaluate(log, position_weights(5, "dcg"), reps=200)
    assert result.estimates["snips"].value == pytest.approx(result.logged)
    assert result.estimates["ips"].value == pytest.approx(result.logged)
