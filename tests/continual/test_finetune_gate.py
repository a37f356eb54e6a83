"""Continual fine-tuning grows the champion without disturbing it; the gate promotes a better
challenger and refuses worse or unchanged ones, with reasons, recorded in MLflow and a report."""
from __future__ import annotations

import json
from dataclasses import replace

import continual_data as c
import numpy as np
import pytest
import torch

from components.config import TrackingConfig
from components.continual.finetune import continual_finetune, continual_rows, grow_model
from components.continual.gate import compare, decide, record
from components.continual.window_split import grow_ids, grow_items, holdout_split, on_catalog
from components.data.dataset import SplitData
from components.errors import RecloopError
from components.models.catalog import resize_catalog
from components.models.scoring import RecloopScorer


@pytest.fixture(scope="module")
def window():
    """Window 0 (2015) on the grown catalog, the guard set on it, and the grown text vectors."""
    base, champion = c.base(), c.champion()
    w = c.window(0)
    items = grow_items(base.items, c.movies(), grow_ids(champion.item_ids, w["item_id"]))
    data = holdout_split(items, c.history(base), w, base.users)
    return data, on_catalog(base, items, data.users), c.text(items)


def gate(data, guard, text, challenger, cfg=c.CONTINUAL, champion=None):
    champion = RecloopScorer(grow_model(champion or c.champion(), data, text), "champion").fit(data)
    return compare(champion, RecloopScorer(challenger, "challenger").fit(data), data, guard, cfg)


def test_grow_appends_new_items_and_keeps_old_rows_exactly(window):
    data, _, text = window
    champion = c.champion()
    n_old = len(champion.item_ids)
    grown = grow_model(champion, data, text)
    assert grown.item_ids[:n_old] == champion.item_ids and len(grown.item_ids) == data.n_items > n_old
    old_tower, tower = champion.model.tower, grown.model.tower
    assert torch.equal(tower.id_embedding.weight[:n_old], old_tower.id_embedding.weight)
    for name in ("text", "has_text", "attributes"):
        assert torch.equal(getattr(tower, name)[:n_old], getattr(old_tower, name))
    with torch.no_grad():
        assert torch.equal(grown.model.catalog()[:n_old], champion.model.catalog())
        # A new item starts where its text and genres place it: no ID contribution yet.
        assert torch.equal(tower.id_embedding.weight[n_old:], torch.zeros_like(tower.id_embedding.weight[n_old:]))
        assert bool(tower.has_text[n_old:].all())
        # An ID is used once the item has training interactions (one only ever appears as a target).
        trained = torch.from_numpy(data.item_popularity()[n_old:] > 0)
        assert torch.equal(tower.has_id[n_old:], trained) and bool(trained.any())


def _targets(rows) -> set[tuple[int, int]]:
    """(user, item index + 1) of every position a training row predicts."""
    _, targets = rows.batch(torch.arange(len(rows)))
    users = rows.sequences.users[:, None].expand_as(targets.items)
    real = targets.items > 0
    return set(zip(users[real].tolist(), targets.items[real].tolist()))


def test_continual_rows_predict_every_new_interaction_plus_a_seeded_replay(window):
    data = window[0]
    vocab, max_len = c.champion().vocab, c.TINY_MODEL.max_len
    # A user's first interaction has nothing before it to predict it from (a new user's is in the window).
    later = data.train.groupby("user_idx").cumcount().to_numpy() > 0
    new = data.train[later & (data.train["timestamp"] >= c.CUTOFF).to_numpy()]
    only_new = continual_rows(data, vocab, max_len, c.CUTOFF, 0.0, 0)
    assert set(zip(new["user_idx"], new["item_idx"] + 1)) <= _targets(only_new)
    window_users = set(data.train.loc[data.train["timestamp"] >= c.CUTOFF, "user_idx"])
    assert set(only_new.sequences.users.tolist()) == window_users
    replayed = continual_rows(data, vocab, max_len, c.CUTOFF, 1.0, 0)
    assert len(replayed) == 2 * len(only_new)
    assert _targets(only_new) <= _targets(replayed)
    again = continual_rows(data, vocab, max_len, c.CUTOFF, 1.0, 0)
    assert torch.equal(again.sequences.features["items"], replayed.sequences.features["items"])
    with pytest.raises(RecloopError, match="nothing to learn"):
        continual_rows(data, vocab, max_len, int(data.train["timestamp"].max()) + 1, 1.0, 0)


def test_gate_promotes_a_challenger_fine_tuned_on_the_window(window, tmp_path):
    data, guard, text = window
    weak = c.weak_champion()
    challenger, result = continual_finetune(weak, data, text, c.CONTINUAL, c.TINY_FINETUNE, seed=0, since=c.CUTOFF)
    decision = gate(data, guard, text, challenger, champion=weak)
    assert decision.promote, decision.reasons
    assert decision.window["challenger"] > 2 * decision.window["champion"]
    # Every held-out interaction of the window is a target (fewer than continual.max_window_targets here).
    assert decision.window["targets"] == len(data.test) > data.test["user_idx"].nunique()
    assert decision.window["gain_se"] > 0 and any("±" in r for r in decision.reasons)
    assert result.epochs == c.CONTINUAL.epochs

    decision.run = "w0"
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = record(decision, tmp_path / "reports", tracking, "continual-test", {"window": 0})
    saved = json.loads(path.read_text())
    assert saved["promote"] and saved["gain"] == pytest.approx(decision.gain)
    assert "Promoted" in (tmp_path / "reports" / "w0.md").read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.uri)
    run = client.search_runs([client.get_experiment_by_name("continual-test").experiment_id])[0]
    assert run.data.tags["gate.decision"] == "promote"
    assert run.data.metrics["window_challenger"] == pytest.approx(decision.window["challenger"])


def test_gate_refuses_a_challenger_trained_on_shuffled_items(window):
    data, guard, text = window
    train = data.train.assign(item_idx=np.random.default_rng(0).permutation(data.train["item_idx"].to_numpy()))
    challenger, _ = continual_finetune(c.champion(), replace(data, train=train), text, c.CONTINUAL,
                                       c.TINY_FINETUNE, seed=0, since=c.CUTOFF)
    decision = gate(data, guard, text, challenger)
    assert not decision.promote
    assert decision.gain < 0 and decision.guard["challenger"] < decision.guard["champion"]
    assert any("not more than the required gain" in r for r in decision.reasons)


def test_gate_refuses_a_challenger_that_learned_nothing(window):
    data, guard, text = window
    still = c.CONTINUAL.model_copy(update={"lr_scale": 1e-9})
    challenger, _ = continual_finetune(c.champion(), data, text, still, c.TINY_FINETUNE, seed=0, since=c.CUTOFF)
    decision = gate(data, guard, text, challenger, still)
    assert not decision.promote
    assert decision.gain == pytest.approx(0.0, abs=1e-6)
    assert any("not more than the required gain" in r for r in decision.reasons)


def test_decide_checks_both_margins():
    cfg = c.CONTINUAL.model_copy(update={"min_gain": 0.01, "max_forgetting": 0.02})
    guard = {"champion": 0.30, "challenger": 0.29}
    assert decide({"champion": 0.10, "challenger": 0.12}, guard, cfg).promote
    assert not decide({"champion": 0.10, "challenger": 0.105}, guard, cfg).promote
    assert not decide({"champion": 0.10, "challenger": 0.20}, {"champion": 0.30, "challenger": 0.27}, cfg).promote


def test_decide_wants_a_gain_above_its_noise():
    cfg = c.CONTINUAL.model_copy(update={"min_gain": 0.0, "min_gain_se": 1.0, "max_forgetting": 0.02})
    guard = {"champion": 0.30, "challenger": 0.30}
    noisy = decide({"champion": 0.0580, "challenger": 0.0585, "gain_se": 0.0055}, guard, cfg)
    assert not noisy.promote
    assert any("required gain 0.0055, 1 standard error(s) at least" in r for r in noisy.reasons)
    assert decide({"champion": 0.0580, "challenger": 0.0700, "gain_se": 0.0055}, guard, cfg).promote
    # Without a measured standard error only min_gain applies; with min_gain_se 0, any gain counts.
    assert decide({"champion": 0.0580, "challenger": 0.0585}, guard, cfg).promote
    anything = cfg.model_copy(update={"min_gain_se": 0.0})
    assert decide({"champion": 0.0580, "challenger": 0.0585, "gain_se": 0.0055}, guard, anything).promote


def test_resize_keeps_matched_id_rows_and_starts_new_ones_as_asked(window):
    data, _, text = window
    champion = c.champion()
    n_old = len(champion.item_ids)
    fresh = resize_catalog(champion, data, text, new_rows="fresh", buffers="extend").model.tower.id_embedding.weight
    zero = grow_model(champion, data, text).model.tower.id_embedding.weight
    assert torch.equal(fresh[:n_old], zero[:n_old]) and bool(fresh[n_old:].abs().sum(1).gt(0).all())
    # Growth is in place: a catalog that reorders the champion's items is refused.
    reordered = SplitData.from_frames(data.items.iloc[::-1], data.users,
                                      *(getattr(data, p).drop(columns=["user_idx", "item_idx"])
                                        for p in ("train", "valid", "test")))
    with pytest.raises(RecloopError, match="must start with the model's items"):
        grow_model(champion, reordered, text[::-1])
