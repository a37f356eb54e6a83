"""Foundation pretraining on two catalogs and transfer to a third one it never saw.

The catalogs are real slices of the embedded MovieLens latest-small, cut so that no movie is in two
of them: two source domains (comedies and dramas outside the target's movies) for the foundation,
and the target, the model tests' slice (users 1-300 and their 300 most rated movies, with the cold
"Toy Story 3"). Text vectors are real all-MiniLM-L6-v2 vectors of title and genres.
"""
from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from recloop_data import ML_SMALL, TINY_MODEL, TINY_PRETRAIN, TOY_STORY, TOY_STORY_2, TOY_STORY_3
from recloop_data import _item_text, _movielens, leave_one_out_split, rated_interactions, write_inputs

from components.config import FinetuneConfig, RegistryConfig, TransferConfig
from components.data.dataset import SplitData
from components.evaluation.evaluator import evaluate_ranking
from components.models.artifacts import FINETUNED_DIR, FOUNDATION_DIR, load_trained
from components.models.catalog import parameter_groups, per_catalog_names
from components.models.foundation import adopt, load_foundation
from components.models.model import Recloop
from components.models.scoring import RecloopScorer
from components.training.foundation import pretrain_foundation, tag_domain
from components.training.transfer import objective, transfer_model

ONE_EPOCH = FinetuneConfig(epochs=1, batch_size=64, lr=3e-3, patience=1, threads=2)
# Twelve short epochs (seconds): with four, zero-shot is barely above random on the unseen catalog.
FOUNDATION_PRETRAIN = TINY_PRETRAIN.model_copy(update={"epochs": 12, "patience": 12})


def source_split(genre: str, exclude: set[str], top_items: int = 200) -> SplitData:
    """Every user's ratings of the `top_items` most rated movies whose first genre is `genre`, outside `exclude`."""
    ratings = pd.read_csv(ML_SMALL / "ratings.csv")
    movies = pd.read_csv(ML_SMALL / "movies.csv")
    movies = movies[(movies["genres"].str.split("|").str[0] == genre) & ~movies["movieId"].astype(str).isin(exclude)]
    interactions, keep = rated_interactions(ratings[ratings["movieId"].isin(movies["movieId"])], top_items)
    return leave_one_out_split(movies[movies["movieId"].isin(keep)], interactions)


@functools.cache
def _sources() -> list[tuple[SplitData, np.ndarray]]:
    from components.features.text import compose_item_text, encode_texts

    target = set(_movielens().items["item_id"])
    out = []
    for genre, domain in (("Comedy", "comedies"), ("Drama", "dramas")):
        data = tag_domain(source_split(genre, target), domain)
        out.append((data, encode_texts(compose_item_text(data.items).tolist())))
    return out


@functools.cache
def _foundation():
    return pretrain_foundation(_sources(), TINY_MODEL, FOUNDATION_PRETRAIN, seed=0)


@pytest.fixture(scope="module")
def sources():
    return _sources()


@pytest.fixture(scope="module")
def pretrained():
    return _foundation()


def test_two_domain_foundation_keeps_only_what_transfers(sources, pretrained):
    found, result = pretrained
    assert [s["domain"] for s in found.sources] == ["comedies", "dramas"]
    assert {"comedies", "dramas"} <= set(found.vocab.domains)
    assert not set(_movielens().items["item_id"]) & set(sources[0][0].items["item_id"])  # the target is unseen
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_score > 0.02
    # No ID table, no catalog buffers; the encoder, text adapter, domain embedding and heads are there.
    assert not any(k.startswith(("tower.id_embedding", "tower.text", "tower.has_", "tower.attributes"))
                   and not k.startswith("tower.text_adapter") for k in found.state)
    assert {"tower.text_adapter.0.weight", "domain.weight", "ln_f.weight"} <= set(found.state)
    assert any(k.startswith("task_heads.like") for k in found.state)


def test_parameter_groups_split_the_state_once():
    target = _movielens()
    trained = adopt(_foundation()[0], target, _item_text(), ids=True)
    transferable, own = parameter_groups(trained.model)
    assert set(own) == per_catalog_names(trained.model)
    assert {"tower.id_embedding.weight", "tower.text", "tower.has_id"} <= set(own)
    assert not set(transferable) & set(own)
    assert set(transferable) | set(own) == set(trained.model.state_dict())


def test_zero_shot_ranks_an_unseen_catalog_better_than_random_and_places_an_item_by_text(pretrained):
    target, text = _movielens(), _item_text()
    trained, result, info = transfer_model(pretrained[0], target, text, TransferConfig(mode="zero-shot"), ONE_EPOCH,
                                           seed=0)
    assert result is None and info["trainable_parameters"] == 0
    assert not trained.model.tower.has_id.any()  # text, attributes and context alone
    # The target's own domain token is new: appended as a zero row, exactly the unknown domain.
    assert trained.vocab.domains[-1] == "movies" and not trained.model.domain.weight[-1].any()

    hr = evaluate_ranking(RecloopScorer(trained).fit(target), target, "test", (10,), progress=False).metrics["hr@10"]
    seen = np.asarray(target.seen_matrix(target.history("test")).sum(1)).ravel()
    random_hr = float(np.minimum(1.0, 10 / (target.n_items - seen)).mean())  # a random ranking's expected HR@10
    assert hr > 1.5 * random_hr

    ids = trained.item_ids
    with torch.no_grad():
        unit = torch.nn.functional.normalize(trained.model.catalog(), dim=1)
    cold = ids.index(TOY_STORY_3)
    similarity = unit @ unit[cold]
    similarity[cold] = -1.0
    ranked = [ids[i] for i in similarity.argsort(descending=True).tolist()]
    # Top 3% of 300 (a random item ranks about 150): the nearer film ranked 1-8 over foundation seeds 0-5.
    assert min(ranked.index(TOY_STORY), ranked.index(TOY_STORY_2)) < 10


def test_adapter_trains_only_what_it_says(pretrained):
    found = pretrained[0]
    adapter_trains = TransferConfig().adapter_trains
    trained, result, info = transfer_model(found, _movielens(), _item_text(), TransferConfig(mode="adapter"),
                                           ONE_EPOCH, seed=0)
    assert result.epochs == 1 and result.best_epoch == 1  # the epoch beat the zero-shot start
    assert 0 < info["trainable_share"] < 1
    learned = frozen = 0
    for name, value in trained.model.state_dict().items():
        if name in per_catalog_names(trained.model) or name == "domain.weight":
            continue
        if any(name.startswith(p + ".") for p in adapter_trains):
            learned += not torch.equal(value, found.state[name])
        else:
            assert torch.equal(value, found.state[name]), name  # bit for bit the foundation's
            frozen += 1
    assert learned and frozen
    # The old domains' rows never moved; the target's new row learned.
    rows = found.state["domain.weight"].shape[0]
    assert torch.equal(trained.model.domain.weight[:rows], found.state["domain.weight"])
    assert trained.model.domain.weight[rows:].any()
    assert all(p.requires_grad for p in trained.model.parameters())  # unfrozen again for whoever uses it next


def test_full_mode_trains_everything(pretrained):
    trained, result, info = transfer_model(pretrained[0], _movielens(), _item_text(), TransferConfig(mode="full"),
                                           ONE_EPOCH, seed=0)
    assert info["trainable_share"] == 1.0
    if result.best_epoch:
        assert not torch.equal(trained.model.blocks[0].attn.qkv.weight, pretrained[0].state["blocks.0.attn.qkv.weight"])


def test_transfer_aligns_the_new_id_rows_with_text_and_can_override_the_id_dropout(pretrained):
    # A foundation pretrained text-only (ID dropout 1.0) would never train its adopter's ID rows by retrieval.
    found = replace(pretrained[0], config=replace(pretrained[0].config, id_dropout=1.0))
    two_epochs = ONE_EPOCH.model_copy(update={"epochs": 2, "patience": 2})
    assert "contrastive" in objective(TransferConfig(), two_epochs).tasks  # on by default
    assert "contrastive" not in objective(TransferConfig(contrastive=0.0), two_epochs).tasks

    def alignment(contrastive: float) -> tuple[float, Recloop]:
        cfg = TransferConfig(mode="full", contrastive=contrastive, id_dropout=0.1)
        trained, result, _ = transfer_model(found, _movielens(), _item_text(), cfg, two_epochs, seed=0)
        assert result.best_epoch > 0  # a trained epoch, not the start, was kept
        tower = trained.model.tower
        with torch.no_grad():
            cosine = torch.nn.functional.cosine_similarity(tower.id_embedding.weight, tower.text_adapter(tower.text))
        return float(cosine[tower.has_id & tower.has_text].mean()), trained.model

    aligned, model = alignment(0.5)
    assert model.config.id_dropout == 0.1
    assert aligned > alignment(0.0)[0] + 0.05


def test_cli_pretrains_a_foundation_then_serves_an_unseen_catalog_zero_shot(sources, tmp_path):
    from click.testing import CliRunner

    from components.cli import cli

    listed = []
    for (data, text), domain in zip(sources, ("comedies", "dramas")):
        (tmp_path / domain).mkdir()
        split_dir, features_dir = write_inputs(data, text, tmp_path / domain)
        listed.append(f"{{split: {split_dir}, features: {features_dir}, domain: {domain}}}")
    (tmp_path / "target").mkdir()
    split_dir, features_dir = write_inputs(_movielens(), _item_text(), tmp_path / "target")
    repo = Path(__file__).resolve().parents[2]
    common = ["--params", str(repo / "params.yaml"), "--set", "tracking.uri=null",
              "--set", f"paths.models={tmp_path / 'models'}", "--set", f"paths.reports={tmp_path / 'reports'}",
              "--set", f"paths.split={split_dir}", "--set", f"paths.features={features_dir}"]
    tiny = ["model.dim=32", "model.layers=1", "model.heads=2", "model.max_len=30", "model.text_hidden=64"]
    pretrained = CliRunner().invoke(cli, ["foundation", *common, "--set", f"foundation.sources=[{', '.join(listed)}]",
                                          "--set", "pretrain.epochs=1", "--set", "pretrain.threads=2",
                                          *[a for t in tiny for a in ("--set", t)]])
    assert pretrained.exit_code == 0, pretrained.output
    assert "2 catalogs" in pretrained.output
    assert load_foundation(tmp_path / "models" / FOUNDATION_DIR).vocab.domains[:2] == ["comedies", "dramas"]

    zero_shot = ["transfer", "--mode", "zero-shot", *common,
                 "--set", f"transfer.foundation={tmp_path / 'models' / FOUNDATION_DIR}"]
    # The content prior's weight is chosen on other catalogs: with none listed, it says where to list them.
    unlisted = CliRunner().invoke(cli, zero_shot)
    assert unlisted.exit_code != 0 and "transfer.blend_on or foundation.sources" in unlisted.output
    served = CliRunner().invoke(cli, [*zero_shot, "--set", f"foundation.sources=[{', '.join(listed)}]"])
    assert served.exit_code == 0, served.output
    assert "transfer (zero-shot)" in served.output and "0 of" in served.output
    report = json.loads((tmp_path / "reports" / "transfer.json").read_text())
    assert report["mode"] == "zero-shot" and report["trainable_parameters"] == 0
    assert report["scoring"] == "cosine" and "model_only_valid_ndcg@10" in report
    prior = report["content_prior"]  # chosen on the foundation's sources, never the target
    assert prior["chosen_on"] == ["comedies", "dramas"] and prior["normalisation"] == "whiten"
    assert prior["valid_ndcg@10"][str(prior["weight"])] == max(prior["valid_ndcg@10"].values())
    assert len(prior["valid_ndcg@10"]) == 11
    served_model = load_trained(tmp_path / "models" / FINETUNED_DIR)
    assert served_model.item_ids == _movielens().items["item_id"].tolist()
    assert served_model.prior.weight == prior["weight"] and served_model.prior.text.shape == _item_text().shape
    fixed = CliRunner().invoke(cli, [*zero_shot, "--set", "transfer.blend_weight=0.3"])  # no catalog needed
    assert fixed.exit_code == 0, fixed.output
    assert load_trained(tmp_path / "models" / FINETUNED_DIR).prior.weight == 0.3
    alone = CliRunner().invoke(cli, [*zero_shot, "--set", "transfer.content_prior=false"])
    assert alone.exit_code == 0, alone.output
    assert load_trained(tmp_path / "models" / FINETUNED_DIR).prior is None
    # Adapter (and full) mode trains on the target: the target's own validation chooses the weight after
    # training, the model alone a candidate, and the saved model carries what was chosen.
    adapted = CliRunner().invoke(cli, ["transfer", "--mode", "adapter", *common, "--set", "finetune.epochs=1",
                                       "--set", f"transfer.foundation={tmp_path / 'models' / FOUNDATION_DIR}"])
    assert adapted.exit_code == 0, adapted.output
    report = json.loads((tmp_path / "reports" / "transfer.json").read_text())
    prior = report["content_prior"]
    assert report["mode"] == "adapter" and prior["chosen_on"] == "the model's own validation targets"
    tried = {float(w): v for w, v in prior["valid_ndcg@10"].items()}
    assert tried[0.0] == pytest.approx(report["model_only_valid_ndcg@10"], abs=1e-5)
    assert tried[prior["weight"]] == max(tried.values())
    assert report["valid_ndcg@10"] == pytest.approx(tried[prior["weight"]], abs=1e-5)  # what is saved is what won
    adapted_prior = load_trained(tmp_path / "models" / FINETUNED_DIR).prior
    assert (adapted_prior.weight if adapted_prior is not None else 0.0) == prior["weight"]
    # Saved as it scores (transfer.zero_shot_scores: cosine): what the service loads compares directions only.
    model = served_model.model
    assert model.config.cosine
    with torch.no_grad():
        assert torch.allclose(model.catalog().norm(dim=1), torch.ones(model.config.n_items), atol=1e-5)

    missing = CliRunner().invoke(cli, ["transfer", *common, "--set", f"transfer.foundation={tmp_path / 'nowhere'}"])
    assert missing.exit_code != 0 and "recloop foundation" in missing.output


def test_foundation_registers_as_its_own_model_and_comes_back(pretrained, tmp_path):
    from components.models.foundation import save_foundation
    from components.registry.foundation import foundation_folder, register_foundation

    save_foundation(pretrained[0], tmp_path / "foundation", {"valid_ndcg@10": 0.1})
    registry = RegistryConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="foundations")
    version = register_foundation(registry, "recloop-foundation", tmp_path / "foundation", {"valid_ndcg@10": 0.1})
    assert version == 1
    back = load_foundation(foundation_folder(registry, "models:/recloop-foundation/latest", tmp_path / "fetched"))
    assert back.vocab == pretrained[0].vocab
    assert all(torch.equal(back.state[k], v) for k, v in pretrained[0].state.items())


def test_pretrain_first_runs_the_targets_pretraining_then_the_fine_tune_and_keeps_adapter_mode_frozen(
        pretrained, tmp_path):
    found = pretrained[0]
    cfg = TransferConfig(mode="adapter", pretrain_first=True)
    one_pretrain_epoch = TINY_PRETRAIN.model_copy(update={"epochs": 1, "patience": 1})
    trained, result, info = transfer_model(found, _movielens(), _item_text(), cfg, ONE_EPOCH, seed=0,
                                           pretrain=one_pretrain_epoch, checkpoint=tmp_path / "transfer.pt")
    assert info["pretrain_epochs"] == 1 and result.epochs == 1
    assert info["pretrain_best_epoch"] in (0, 1) and info["pretrain_valid_ndcg@10"] > 0
    assert (tmp_path / "transfer-pretrain.pt").exists()  # the phase resumes on its own; the stage removes it
    for name, value in trained.model.state_dict().items():
        if name in per_catalog_names(trained.model) or name == "domain.weight":
            continue
        if not any(name.startswith(p + ".") for p in cfg.adapter_trains):
            assert torch.equal(value, found.state[name]), name  # frozen through both phases
    # Without it nothing of the pretraining phase is reported.
    _, _, plain = transfer_model(found, _movielens(), _item_text(), TransferConfig(mode="adapter"), ONE_EPOCH, seed=0)
    assert not any(k.startswith("pretrain_") for k in plain)


def test_zero_shot_cosine_and_the_content_blend_with_a_weight_chosen_on_other_catalogs(pretrained, sources):
    from components.evaluation.baselines import ContentKNN
    from components.models.content_prior import WEIGHTS, standardized
    from components.training.zero_shot import BlendScorer, choose_blend_weight, zero_shot_scorer

    z = standardized(torch.tensor([[1.0, 2.0, 3.0, float("-inf")], [5.0, 5.0, 5.0, 5.0]]))
    assert torch.allclose(z[0, :3].mean(), torch.tensor(0.0), atol=1e-6) and z[0, 3] == float("-inf")
    assert torch.allclose(z[0, :3].pow(2).mean(), torch.tensor(1.0), atol=1e-5) and not z[1].any()

    target, text = _movielens(), _item_text()
    users = np.arange(target.n_users)
    cosine = zero_shot_scorer(pretrained[0], target, text, cosine=True).fit(target)
    assert cosine.trained.model.config.cosine and float(cosine.score(target, users, "test").abs().max()) <= 1 + 1e-5
    model, content = zero_shot_scorer(pretrained[0], target, text), ContentKNN(text)
    assert not model.trained.model.config.cosine  # the dot product, as the foundation scores
    for weight, alone in ((0.0, model.fit(target)), (1.0, content.fit(target))):
        blended = BlendScorer(model, content, weight).fit(target).score(target, users, "test")
        order = torch.as_tensor(alone.score(target, users, "test")).argsort(dim=1, descending=True)[:, :10]
        assert torch.equal(blended.argsort(dim=1, descending=True)[:, :10], order)

    choice = choose_blend_weight(pretrained[0], sources)  # the foundation's sources, never the target
    assert choice.weight in WEIGHTS and set(choice.valid_ndcg) == set(WEIGHTS) and choice.catalogs == 2
    assert choice.valid_ndcg[choice.weight] == max(choice.valid_ndcg.values())
    assert len(choice.per_catalog) == 2 and all(  # the mean of each catalog's own table
        choice.valid_ndcg[w] == pytest.approx(np.mean([c[w] for c in choice.per_catalog])) for w in WEIGHTS)
    hr = evaluate_ranking(BlendScorer(model, content, choice.weight).fit(target), target, "test", (10,),
                          progress=False).metrics["hr@10"]
    assert hr > 0


def test_shrink_mixes_a_fresh_initialisation_into_the_weights_that_learn(pretrained):
    from components.training.transfer import set_trainable, shrink_toward_fresh

    found = pretrained[0]
    trained = adopt(found, _movielens(), _item_text(), ids=True)
    set_trainable(trained.model, "adapter", TransferConfig().adapter_trains)
    transferred = set(found.state) - per_catalog_names(trained.model)
    torch.manual_seed(0)
    fresh = Recloop(trained.model.config).state_dict()
    torch.manual_seed(0)
    moved = shrink_toward_fresh(trained.model, transferred, 0.5)
    state = trained.model.state_dict()
    learns = [n for n, p in trained.model.named_parameters() if p.requires_grad and n in transferred]
    adapter = next(n for n in learns if n.startswith("tower.text_adapter."))
    assert torch.allclose(state[adapter], 0.5 * found.state[adapter] + 0.5 * fresh[adapter])
    assert torch.equal(state["blocks.0.attn.qkv.weight"], found.state["blocks.0.attn.qkv.weight"])  # frozen: kept
    assert moved == sum(state[n].numel() for n in learns)
    assert shrink_toward_fresh(trained.model, transferred, 1.0) == 0

    _, _, info = transfer_model(found, _movielens(), _item_text(), TransferConfig(mode="full", shrink=0.5),
                                ONE_EPOCH, seed=0)
    assert info["shrunk_parameters"] == sum(p.numel() for n, p in trained.model.named_parameters() if n in transferred)
