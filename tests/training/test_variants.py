"""Ablations are changes of params, applied to the nested sections; the epoch line a user reads."""
from __future__ import annotations

import pytest

from components.config import FinetuneConfig, LabelsConfig, ModelConfig, PretrainConfig
from components.errors import RecloopError
from components.training.loop import LoopResult, epoch_line
from components.training.variants import VARIANTS, variant


def make(name: str):
    return variant(name, ModelConfig(), PretrainConfig(), FinetuneConfig(), LabelsConfig(), item_text=None)


def test_variants_change_only_what_they_name():
    single = make("recloop-single-task")
    assert (single.finetune.weights.like, single.finetune.weights.rating) == (0.0, 0.0)
    assert single.finetune.weights.retrieval == FinetuneConfig().weights.retrieval
    assert single.pretrain is not None and single.finetune.init == "pretrained"
    scratch = make("recloop-no-pretrain")
    assert scratch.pretrain is None and scratch.finetune.init == "scratch"
    assert scratch.finetune.weights == FinetuneConfig().weights
    assert make("recloop-id-only").model.use_text is False
    assert set(VARIANTS) >= {"recloop", "recloop-text-only"}
    with pytest.raises(RecloopError, match="unknown recloop variant"):
        make("recloop-nope")


def test_epoch_line_shows_loss_validation_and_the_best_so_far():
    result = LoopResult(rows=10, epochs=3, best_epoch=2, best_score=0.0712)
    metrics = {"train_loss": 7.8123, "train_retrieval": 7.5, "valid_ndcg@10": 0.0698, "valid_hr@10": 0.131,
               "valid_like_auc": 0.7123, "test_ndcg@10": 0.05, "epoch_seconds": 41.2}
    line = epoch_line("finetune", 3, 30, metrics, result)
    assert line == ("finetune epoch 3/30  loss 7.812  valid ndcg@10 0.0698 (best 0.0712 @2)  hr@10 0.131  "
                    "like_auc 0.712  41s")
