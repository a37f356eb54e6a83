"""The params' model section reaches the model: every knob, by name, checked; the loss weights name real heads."""
from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest
import torch

from components.config import FinetuneWeights, ModelConfig, PretrainWeights
from components.models.architecture import DATA_KNOBS, VOCAB_KNOBS, recloop_config
from components.models.artifacts import CONFIG_FILE, WEIGHTS_FILE, TrainedModel, load_trained, save_trained
from components.models.catalog import build_model
from components.models.model import TASKS
from components.models.shape import RecloopConfig
from components.models.vocab import fit_vocab


def changed(name: str, value):
    """Another valid value for a ModelConfig knob."""
    if isinstance(value, bool):
        return not value
    if name == "heads":
        return 4
    if name == "dim":
        return 128
    if name == "encoder":
        return "bsarec"
    if name == "positions":
        return "relative"
    if name == "source_dropout":
        return {"attributes": 0.5}
    return value / 2 if isinstance(value, float) else value + 1


@pytest.mark.parametrize("name", [n for n in ModelConfig.model_fields if n not in VOCAB_KNOBS + DATA_KNOBS])
def test_every_model_knob_reaches_the_model_config(movielens, name):
    vocab = fit_vocab(movielens, 8, 2)
    default = ModelConfig()
    other = default.model_copy(update={name: changed(name, getattr(default, name))})
    ModelConfig.model_validate(other.model_dump())  # still a valid configuration
    before = recloop_config(default, vocab, movielens.n_items, 384)
    after = recloop_config(other, vocab, movielens.n_items, 384)
    assert getattr(after, name) == getattr(other, name) != getattr(before, name)


def test_vocab_knobs_shape_the_vocabulary_and_model_config_names_every_field(movielens):
    assert set(VOCAB_KNOBS) <= set(ModelConfig.model_fields)
    coarse, fine = fit_vocab(movielens, 2, 2), fit_vocab(movielens, 8, 2)
    assert (recloop_config(ModelConfig(), coarse, 10, 384).n_value_buckets
            < recloop_config(ModelConfig(), fine, 10, 384).n_value_buckets)
    # No defaults: a field the builder forgot would fail here rather than fall back silently.
    assert all(f.default is f.default_factory for f in fields(RecloopConfig))
    with pytest.raises(TypeError):
        RecloopConfig(n_items=10)


def test_loss_weights_name_the_model_heads():
    assert set(FinetuneWeights.model_fields) == set(TASKS)
    assert set(PretrainWeights.model_fields) <= set(TASKS)


def test_model_folders_with_the_old_head_names_still_load(movielens, item_text, tmp_path):
    torch.manual_seed(0)
    vocab = fit_vocab(movielens, 8, 2)
    tiny = ModelConfig(dim=16, layers=1, heads=2, max_len=10, text_hidden=16)
    trained = TrainedModel(build_model(tiny, movielens, item_text, vocab), vocab, movielens.items["item_id"].tolist())
    save_trained(trained, tmp_path, {})
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == asdict(trained.model.config)
    # Weights as models saved before the heads became `task_heads` name them.
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    old = {k.replace("task_heads.like.", "like_head.").replace("task_heads.rating.", "rating_head."): v
           for k, v in state.items()}
    assert any(k.startswith("like_head.") for k in old)
    torch.save(old, tmp_path / WEIGHTS_FILE)
    loaded = load_trained(tmp_path).model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
