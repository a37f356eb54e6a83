"""The gate's off-policy test: off by default; on, a challenger whose estimate is below the champion's
(or has none) is refused; the estimates go to the gate's MLflow run."""
import pytest

from components.config import ContinualConfig, TrackingConfig
from components.continual.gate import decide, record

WINDOW = {"champion": 0.10, "challenger": 0.15, "targets": 200.0}
GUARD = {"champion": 0.30, "challenger": 0.30, "targets": 100.0}
WORSE = {"metric": "click_dcg", "champion": 0.080, "challenger": 0.070}
BETTER = {"metric": "click_dcg", "champion": 0.080, "challenger": 0.085}


def test_off_by_default_the_estimate_is_reported_not_gated():
    cfg = ContinualConfig()
    assert not cfg.ope_gate
    decision = decide(WINDOW, GUARD, cfg, WORSE)
    assert decision.promote and any("not gated" in r for r in decision.reasons)
    assert decide(WINDOW, GUARD, cfg).promote


def test_with_the_param_a_worse_or_missing_estimate_is_refused():
    cfg = ContinualConfig(ope_gate=True)
    worse = decide(WINDOW, GUARD, cfg, WORSE)
    assert not worse.promote and any("below the champion's" in r for r in worse.reasons)
    assert decide(WINDOW, GUARD, cfg, BETTER).promote
    missing = decide(WINDOW, GUARD, cfg)
    assert not missing.promote and any("none was given" in r for r in missing.reasons)
    # The offline tests still count: a better estimate does not rescue a worse window.
    assert not decide({"champion": 0.10, "challenger": 0.09}, GUARD, cfg, BETTER).promote


def test_the_estimates_are_logged_in_the_gates_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    decision = decide(WINDOW, GUARD, ContinualConfig(ope_gate=True), BETTER)
    decision.run = "w1"
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    record(decision, tmp_path / "reports", tracking, "gate-ope-test")
    client = MlflowClient(tracking_uri=tracking.uri)
    run = client.search_runs([client.get_experiment_by_name("gate-ope-test").experiment_id])[0]
    assert run.data.metrics["ope_challenger"] == pytest.approx(0.085)
    assert run.data.metrics["ope_champion"] == pytest.approx(0.080)
    assert "click_dcg" in run.data.tags["gate.reasons"]
