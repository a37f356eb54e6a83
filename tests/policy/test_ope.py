"""Off-policy estimators against hand-computed values, and the logging policy on its own log."""
import numpy as np
import pandas as pd
import pytest

from components.config import ExplorationConfig
from components.errors import RecloopError
from components.policy.exploration import rank
from components.policy.ope import RewardModel, evaluate, position_weights

LOG = pd.DataFrame({"request_id": ["a", "a", "b", "b"], "position": [0, 1, 0, 1],
                    "propensity": [0.5, 0.25, 1.0, 0.5], "target": [1.0, 0.5, 0.5, 0.25],
                    "reward": [1.0, 0.0, 0.0, 1.0], "predicted": 0.5, "direct": 0.4})


def test_ips_snips_dr_match_the_hand_computed_values():
    result = evaluate(LOG, np.ones(2), reps=200)
    # rho = 2, 2 on list a and 0.5, 0.5 on list b.
    assert result.estimates["ips"].value == pytest.approx((2 * 1 + 0.5 * 1) / 2)
    # Per position: (2*1 + 0.5*0) / 2.5 and (2*0 + 0.5*1) / 2.5.
    assert result.estimates["snips"].value == pytest.approx(0.8 + 0.2)
    # a: 0.4 + 2(1 - .5) + 0.4 + 2(0 - .5) = 0.8; b: 0.4 + .5(0 - .5) + 0.4 + .5(1 - .5) = 0.8.
    assert result.estimates["dr"].value == pytest.approx(0.8)
    assert result.logged == pytest.approx(1.0)
    assert result.ess == pytest.approx(25 / 8.5)
    assert result.support == pytest.approx(1.25)
    assert result.requests == 2
    for e in result.estimates.values():
        assert e.low <= e.value <= e.high or e.se == 0


def test_position_weights():
    np.testing.assert_allclose(position_weights(4, "rate"), 0.25)
    np.testing.assert_allclose(position_weights(3, "dcg"), [1, 1 / np.log2(3), 0.5])
    with pytest.raises(RecloopError, match="unknown position weighting"):
        position_weights(3, "ndcg")


def test_the_logging_policy_on_its_own_log_is_its_empirical_value():
    rng = np.random.default_rng(3)
    cfg = ExplorationConfig(kind="boltzmann", temperature=0.7, samples=200)
    rows = []
    for i in range(300):
        scores = rng.normal(size=20)
        slate = rank(cfg, scores, 5, f"r{i}")
        clicks = rng.random(5) < 1 / (1 + np.exp(-scores[slate.items])) / (np.arange(5) + 1)
        rows += [{"request_id": f"r{i}", "position": j, "propensity": p, "target": p, "reward": float(c)}
                 for j, (p, c) in enumerate(zip(slate.propensity, clicks))]
    for kind in ("rate", "dcg"):
        result = evaluate(pd.DataFrame(rows), position_weights(5, kind), reps=300, seed=1)
        for name in ("ips", "snips", "dr"):
            assert result.estimates[name].value == pytest.approx(result.logged)
        assert result.estimates["snips"].low < result.logged < result.estimates["snips"].high
        assert result.ess == pytest.approx(1500) and result.support == pytest.approx(1.0)


def test_bad_logs_are_clear_errors():
    with pytest.raises(RecloopError, match=r"misses the columns \['target'\]"):
        evaluate(LOG.drop(columns="target"), np.ones(2))
    with pytest.raises(RecloopError, match="propensity is not positive"):
        evaluate(LOG.assign(propensity=0.0), np.ones(2))
    with pytest.raises(RecloopError, match="positions must lie in 0..0"):
        evaluate(LOG, np.ones(1))


def test_the_reward_model_learns_position_and_score_effects():
    rng = np.random.default_rng(0)
    position, score = rng.integers(0, 3, 4000), rng.normal(size=4000)
    truth = 1 / (1 + np.exp(-(np.array([0.5, -0.5, -1.5])[position] + 1.2 * score)))
    model = RewardModel.fit(position, score, rng.random(4000) < truth, 3)
    np.testing.assert_allclose(model.coef, [0.5, -0.5, -1.5, 1.2], atol=0.2)
    assert model.predict(np.array([0]), np.array([0.0]))[0] == pytest.approx(1 / (1 + np.exp(-model.coef[0])))
