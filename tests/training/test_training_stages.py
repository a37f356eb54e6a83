"""The pretrain and finetune stages end to end on files: outputs, reports, MLflow, the CLI door, evaluate's registry."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from recloop_data import TINY_FINETUNE, TINY_MODEL, TINY_PRETRAIN, write_inputs

from components.cli import cli
from components.config import EvaluateConfig, TrackingConfig
from components.evaluation.evaluate import MODELS, ModelContext
from components.evaluation.evaluator import evaluate_ranking
from components.models.artifacts import CONFIG_FILE, ITEM_VECTORS_FILE, VOCAB_FILE, WEIGHTS_FILE, TrainedModel
from components.models.catalog import build_model
from components.models.vocab import fit_vocab
from components.training.finetune import finetune, transfer
from components.training.pretrain import pretrain
from components.training.stage import combine


def test_pretrain_then_finetune_stages_write_models_reports_and_mlflow(movielens, item_text, tmp_path):
    split_dir, features_dir = write_inputs(movielens, item_text, tmp_path)
    models, reports = tmp_path / "models", tmp_path / "reports"
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    pre_cfg = TINY_PRETRAIN.model_copy(update={"epochs": 2})
    summary = pretrain(TINY_MODEL, pre_cfg, tracking, split_dir, features_dir, models, reports, seed=0)
    assert "wrote" in summary.describe() and summary.epochs == 2
    for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, ITEM_VECTORS_FILE):
        assert (models / "pretrained" / name).exists()
    assert not (models / "checkpoints" / "pretrain.pt").exists()  # finished: nothing left to resume
    assert json.loads((reports / "pretrain.json").read_text())["valid_ndcg@10"] > 0
    assert len(pd.read_csv(reports / "pretrain_history.csv")) == 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.dim"] == str(TINY_MODEL.dim)
    assert [m.step for m in client.get_metric_history(summary.run_id, "valid_ndcg_at_10")] == [1, 2]
    assert any(a.path == "pretrain" for a in client.list_artifacts(summary.run_id))

    fine = finetune(TINY_MODEL, TINY_FINETUNE.model_copy(update={"epochs": 1}), TrackingConfig(uri=None),
                    split_dir, features_dir, models, reports, seed=0)
    assert fine.init == "pretrained" and fine.run_id is None
    metrics = json.loads((reports / "finetune.json").read_text())
    assert {"valid_ndcg@10", "valid_like_auc", "valid_rating_rmse"} <= set(metrics)
    vectors = np.load(models / "finetuned" / ITEM_VECTORS_FILE)
    assert vectors.shape == (movielens.n_items, TINY_MODEL.dim)

    # The evaluate stage finds the model by name and scores it like any baseline.
    ctx = ModelContext(EvaluateConfig(models=["recloop"]), 0, movielens, features_dir, models)
    scorer = MODELS["recloop"](ctx).fit(movielens)
    result = evaluate_ranking(scorer, movielens, "valid", (10,), progress=False)
    assert result.metrics["ndcg@10"] == pytest.approx(metrics["valid_ndcg@10"])


def test_cli_names_the_missing_input(tmp_path):
    result = CliRunner().invoke(cli, ["pretrain", "--params", os.devnull,
                                      "--set", f"paths.split={tmp_path / 'nowhere'}"])
    assert result.exit_code == 2
    assert "run `recloop split` first" in result.output


def test_combined_datasets_and_transfer_by_item_id(movielens, item_text):
    joint, text = combine([(movielens, item_text), (movielens, item_text)])
    assert joint.n_items == 2 * movielens.n_items and len(text) == joint.n_items
    assert joint.items["item_id"].iloc[movielens.n_items] == "1:" + movielens.items["item_id"].iloc[0]
    assert len(joint.train) == 2 * len(movielens.train)

    vocab = fit_vocab(joint, TINY_MODEL.value_buckets, TINY_MODEL.min_attribute_count)
    source = TrainedModel(build_model(TINY_MODEL, joint, text, vocab), vocab, joint.items["item_id"].tolist())
    target = transfer(source, movielens, item_text)
    n = movielens.n_items
    assert target.model.config.n_items == n
    assert (target.model.tower.id_embedding.weight == source.model.tower.id_embedding.weight[:n]).all()
    blocks = target.model.blocks[0].attn.qkv.weight
    assert (blocks == source.model.blocks[0].attn.qkv.weight).all()


def test_finetune_with_a_content_prior_saves_the_weight_validation_chose(movielens, item_text, tmp_path):
    split_dir, features_dir = write_inputs(movielens, item_text, tmp_path)
    models, reports = tmp_path / "models", tmp_path / "reports"
    cfg = TINY_FINETUNE.model_copy(update={"epochs": 1, "init": "scratch", "content_prior": True})
    finetune(TINY_MODEL, cfg, TrackingConfig(uri=None), split_dir, features_dir, models, reports, seed=0,
             history_items=5)
    metrics = json.loads((reports / "finetune.json").read_text())
    prior = metrics["content_prior"]
    tried = {float(w): v for w, v in prior["valid_ndcg@10"].items()}
    # The model alone is a candidate, so the blend is never chosen below it.
    assert tried[0.0] == pytest.approx(metrics["model_only_valid_ndcg@10"], abs=1e-5)
    assert prior["weight"] == max(tried, key=tried.get) and len(tried) >= 3
    assert metrics["valid_ndcg@10"] >= metrics["model_only_valid_ndcg@10"]
    # Evaluate loads the model with its prior and measures what validation chose.
    ctx = ModelContext(EvaluateConfig(models=["recloop"]), 0, movielens, features_dir, models)
    result = evaluate_ranking(MODELS["recloop"](ctx).fit(movielens), movielens, "valid", (10,), progress=False)
    assert result.metrics["ndcg@10"] == pytest.approx(metrics["valid_ndcg@10"])
