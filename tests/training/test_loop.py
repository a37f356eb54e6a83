"""The training loop: resumes to the very same state, stops early on validation NDCG, sampled softmax learns."""
from __future__ import annotations

import torch
from recloop_data import TINY_FINETUNE, TINY_MODEL, TINY_PRETRAIN

from components.evaluation.baselines import MostPopular
from components.data.dataset import SplitData
from components.evaluation.evaluator import evaluate_ranking
from components.training.finetune import finetune_model
from components.training.loop import WeightAverage, budget_horizon, lr_factor
from components.training.pretrain import pretrain_model
from components.training.stage import validator


def test_interrupted_training_resumes_to_the_same_state(movielens, item_text, tmp_path):
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 2})
    straight, straight_result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=3)

    checkpoint = tmp_path / "pretrain.pt"
    stopped = cfg.model_copy(update={"stop_after_epoch": 1})
    _, first = pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    assert first.interrupted and first.epochs == 1 and checkpoint.exists()
    # The rerun keeps the param (as a rerun of the same command would) and continues after epoch 1.
    resumed, second = pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    assert second.resumed_from == 1 and second.epochs == 2 and not second.interrupted

    assert [h["train_loss"] for h in second.history] == [h["train_loss"] for h in straight_result.history]
    expected = straight.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_changed_params_do_not_resume_a_stale_checkpoint(movielens, item_text, tmp_path):
    checkpoint = tmp_path / "pretrain.pt"
    stopped = TINY_PRETRAIN.model_copy(update={"epochs": 2, "stop_after_epoch": 1})
    pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    other_lr = stopped.model_copy(update={"lr": 1e-3})
    _, result = pretrain_model(movielens, item_text, TINY_MODEL, other_lr, seed=3, checkpoint=checkpoint)
    assert result.resumed_from == 0 and result.interrupted


def test_early_stopping_restores_the_best_epoch(movielens, item_text):
    # A learning rate far too high: validation gets worse after the first epoch.
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 6, "patience": 1, "lr": 0.3, "grad_clip": None})
    trained, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=0)
    assert result.stopped_early and result.epochs < 6
    scores = [h["valid_ndcg@10"] for h in result.history]
    assert result.best_score == max(scores) and result.best_epoch == scores.index(max(scores)) + 1
    assert validator(trained, movielens)(trained.model)["valid_ndcg@10"] == result.best_score


def test_a_time_budget_stops_after_the_epoch_that_spends_it(movielens, item_text):
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 3, "max_minutes": 1e-6})
    _, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=0, curve_stage="test")
    assert result.out_of_time and result.epochs == 1 and not result.interrupted
    # The test curve is only recorded beside the validation metric that picks the epoch.
    assert result.best_epoch == 1 and 0 < result.history[0]["test_ndcg@10"] < 1


def test_weight_average_follows_the_moving_average_and_swaps_back():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    start = [p.detach().clone() for p in model.parameters()]
    expected = [p.clone() for p in start]
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        average.update()
        decay = min(0.9, (1 + t) / (10 + t))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
    trained = [p.detach().clone() for p in model.parameters()]
    with average.applied():
        for p, e in zip(model.parameters(), expected):
            torch.testing.assert_close(p.detach(), e)
    for p, t in zip(model.parameters(), trained):
        assert torch.equal(p.detach(), t)  # the trained weights are back, not the average


def test_a_loaded_weight_average_lives_where_its_parameters_train():
    # Checkpoints are read onto the CPU; a model trained on a GPU must get its averages back there (here the
    # meta device stands in for one: a CPU average would stay on the CPU and the next update would fail).
    model = torch.nn.Linear(3, 2, device="meta")
    average = WeightAverage(model, decay=0.9)
    average.load({"average": [torch.ones(2, 3), torch.ones(2)], "updates": 7})
    assert [a.device.type for a in average.average] == ["meta", "meta"] and average.updates == 7
    average.update()


def test_bfloat16_softmax_products_train_along_the_float32_curve(movielens, item_text):
    # pretrain.softmax_precision reaches the loss: the same run, its products rounded, not the same bits.
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 2})
    exact_model, exact = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=3)
    narrow_model, narrow = pretrain_model(movielens, item_text, TINY_MODEL,
                                          cfg.model_copy(update={"softmax_precision": "bfloat16"}), seed=3)
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(exact.history, narrow.history)]
    assert all(abs(a - b) < 1e-2 * a for a, b in losses) and any(a != b for a, b in losses)
    assert not torch.equal(exact_model.model.tower.id_embedding.weight, narrow_model.model.tower.id_embedding.weight)


def test_weight_averaged_training_keeps_the_validated_average_and_resumes_it(movielens, item_text, tmp_path):
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 2, "weight_average": 0.99})
    straight, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=3)
    # What was validated (the average at the best epoch) is what the stage returns.
    assert validator(straight, movielens)(straight.model)["valid_ndcg@10"] == result.best_score
    raw, raw_result = pretrain_model(movielens, item_text, TINY_MODEL, TINY_PRETRAIN.model_copy(update={"epochs": 2}),
                                     seed=3)
    assert [h["train_loss"] for h in raw_result.history] == [h["train_loss"] for h in result.history]
    assert not torch.equal(raw.model.tower.id_embedding.weight, straight.model.tower.id_embedding.weight)

    checkpoint = tmp_path / "pretrain.pt"
    stopped = cfg.model_copy(update={"stop_after_epoch": 1})
    pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    resumed, second = pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    assert second.resumed_from == 1 and second.best_score == result.best_score
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight.model.state_dict()[name]), name


def test_learning_rate_schedules_fall_from_the_peak_to_zero():
    for schedule in ("linear", "cosine"):
        factors = [lr_factor(schedule, p / 10) for p in range(11)]
        assert factors[0] == 1.0 and abs(factors[-1]) < 1e-12
        assert all(a > b for a, b in zip(factors, factors[1:]))
    assert lr_factor("cosine", 0.5) == 0.5 and lr_factor("linear", 0.25) == 0.75
    assert lr_factor("constant", 0.9) == 1.0 and lr_factor("linear", 1.5) == 0.0


def test_a_time_budget_sets_the_epochs_the_schedule_spans():
    # 3 epochs in 300 s of a 1,000 s budget: 7 more fit, capped by the epoch cap.
    assert budget_horizon(3, 3, 300.0, 1000.0, cap=30) == 10
    assert budget_horizon(3, 3, 300.0, 1000.0, cap=8) == 8
    # Resumed after 5 epochs, 2 more in 200 s of this run: the per-epoch cost is this run's own.
    assert budget_horizon(7, 2, 200.0, 1000.0, cap=30) == 15
    assert budget_horizon(3, 3, 1100.0, 1000.0, cap=30) == 3  # over budget: no other epoch


def test_a_scheduled_learning_rate_decays_per_step_and_resumes(movielens, item_text, tmp_path):
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 2, "lr_schedule": "linear"})
    straight, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=3)
    first, last = (h["lr"] for h in result.history)
    # Each epoch logs its last step's rate; over two epochs the rate falls linearly to 0, half of it an epoch.
    assert 0.5 < first / cfg.lr < 0.56 and 0 < last / cfg.lr < 0.06
    assert abs((first - last) - 0.5 * cfg.lr) < 1e-12
    _, constant = pretrain_model(movielens, item_text, TINY_MODEL, TINY_PRETRAIN.model_copy(update={"epochs": 2}),
                                 seed=3)
    assert constant.history[0]["train_loss"] != result.history[0]["train_loss"]

    checkpoint = tmp_path / "pretrain.pt"
    stopped = cfg.model_copy(update={"stop_after_epoch": 1})
    pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    resumed, second = pretrain_model(movielens, item_text, TINY_MODEL, stopped, seed=3, checkpoint=checkpoint)
    assert [h["lr"] for h in second.history] == [first, last]
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight.model.state_dict()[name]), name


def test_a_scheduled_run_ends_when_its_budget_leaves_no_other_epoch(movielens, item_text):
    cfg = TINY_PRETRAIN.model_copy(update={"epochs": 3, "max_minutes": 1e-6, "lr_schedule": "cosine"})
    _, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=0)
    assert result.out_of_time and result.epochs == 1


def test_sampled_softmax_with_log_q_learns(movielens, item_text):
    cfg = TINY_PRETRAIN.model_copy(update={"full_softmax_max_items": 10, "sampled_negatives": 64})
    _, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=0)
    losses = [h["train_retrieval"] for h in result.history]
    assert losses[-1] < losses[0]
    popular = evaluate_ranking(MostPopular().fit(movielens), movielens, "valid", (10,), progress=False)
    assert result.best_score > 1.5 * popular.metrics["ndcg@10"]


def test_prefix_samples_learn_and_count_targets(movielens, item_text):
    cfg = TINY_PRETRAIN.model_copy(update={"samples": "prefixes", "epochs": 2})
    _, result = pretrain_model(movielens, item_text, TINY_MODEL, cfg, seed=0)
    # One sample per supervised transition: the training rows' length minus one each.
    assert result.rows == len(movielens.train) - movielens.n_users
    popular = evaluate_ranking(MostPopular().fit(movielens), movielens, "valid", (10,), progress=False)
    assert result.best_score > 1.5 * popular.metrics["ndcg@10"]


def implicit(data):
    """The same interactions as views without ratings: no like or rating labels to learn."""
    frames = [getattr(data, name).drop(columns=["user_idx", "item_idx"], errors="ignore")
              for name in ("items", "users", "train", "valid", "test")]
    for frame in frames[2:]:
        frame["event"], frame["value"] = "view", 1.0
    return SplitData.from_frames(*frames)


def test_fine_tuning_without_labels_never_ends_below_its_start(movielens, item_text):
    pretrained, _ = pretrain_model(movielens, item_text, TINY_MODEL, TINY_PRETRAIN.model_copy(update={"epochs": 2}),
                                   seed=0)
    # A learning rate far too high: every epoch is worse than the pretrained weights.
    ruinous = TINY_FINETUNE.model_copy(update={"lr": 0.3, "grad_clip": None})
    views = implicit(movielens)
    tuned, result = finetune_model(views, item_text, ruinous, seed=0, pretrained=pretrained)
    assert result.history[0]["epoch"] == 0 and result.best_epoch == 0
    assert all(h["valid_ndcg@10"] < result.best_score for h in result.history[1:])
    assert validator(tuned, views)(tuned.model)["valid_ndcg@10"] == result.best_score
    # With ratings the heads have to learn, so the untrained heads of the start are never kept.
    _, rated = finetune_model(movielens, item_text, ruinous, seed=0, pretrained=pretrained)
    assert rated.history[0]["epoch"] == 1 and rated.best_epoch >= 1


def test_a_budget_the_starts_validation_spent_starts_no_epoch(movielens, item_text):
    pretrained, _ = pretrain_model(movielens, item_text, TINY_MODEL, TINY_PRETRAIN.model_copy(update={"epochs": 1}),
                                   seed=0)
    start = {k: v.clone() for k, v in pretrained.model.state_dict().items()}
    spent = TINY_FINETUNE.model_copy(update={"max_minutes": 1e-6, "content_prior": False})
    tuned, result = finetune_model(implicit(movielens), item_text, spent, seed=0, pretrained=pretrained)
    assert result.out_of_time and result.epochs == 0 and result.best_epoch == 0
    assert [h["epoch"] for h in result.history] == [0]
    assert all(torch.equal(start[k], v) for k, v in tuned.model.state_dict().items())
