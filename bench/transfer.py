"""Transfer to a catalog the model never saw: a foundation pretrained on other catalogs, then zero-shot,
adapter or full fine-tuning on the target with a share of its training users, against training from
scratch at the same shares, the text-only content baseline and most-popular.

Target: UniSRec's Scientific (the given split), or Office_Products with `--dataset office`
(then `scientific` may be a source). Foundation sources (--sources): other datasets with
item text in --root: Amazon 2018 Office_Products (MiniOneRec files: sequences rebuilt from the
valid/test rows; their train rows are missing) and MovieLens 100K (titles, genres) by default;
`magazine` adds Magazine_Subscriptions (reviews + metadata). Industrial_and_Scientific (`industrial`,
MiniOneRec's files as Office's) is the same Amazon category as Scientific: a source for the Office
target only.

Each source and the target are prepared once (ingest -> validate -> split -> featurize) in the
bench's work folder (bench/work); the foundation is pretrained once per sources and params (bench/work/transfer-foundation/).
Every row is one run and one JSON in bench/results/transfer/; run rows as separate processes:

    .venv/bin/python bench/transfer.py --row foundation --set pretrain.max_minutes=6
    .venv/bin/python bench/transfer.py --row zero-shot
    .venv/bin/python bench/transfer.py --row adapter --fraction 0.1 --set finetune.max_minutes=2
    .venv/bin/python bench/transfer.py --row scratch --fraction 1.0 --set pretrain.max_minutes=5
    .venv/bin/python bench/transfer.py --row content,popular
    .venv/bin/python bench/transfer.py --row zero-shot-cosine,zero-shot-blend,zero-shot-cosine-blend
    .venv/bin/python bench/transfer.py --row zero-shot-served --content-norm whiten

Zero-shot rows: `zero-shot` is `recloop transfer`'s zero-shot model, scored as `transfer.zero_shot_scores`
says (cosine since session 6; `--set transfer.zero_shot_scores=dot` gives the earlier dot-product rows),
`zero-shot-blend` uses the dot product and `zero-shot-cosine*` the cosine (`Recloop.unit`), `-blend`
mixes it with the content prior at the weight
with the best validation NDCG@10 on the --blend-on catalogs (default: the foundation's sources,
under an unseen domain token), never on the target. `zero-shot-served` is what `recloop transfer --mode
zero-shot` saves and the service serves: the stage's own functions give the model its content prior
(`transfer.content_prior`, `--content-norm` as `transfer.content_norm`, the weight chosen on the --blend-on
catalogs), `recloop package`'s `write_bundle` packages it, and the service's `BundleRecommender` answers one
request per test user whose history is the user's train + valid events (timestamps, events, values and
domains as stored); HR/NDCG@10 come from those answers' top 10 (a target in the history is a miss, as in
the evaluator), `library_metrics` from the evaluator on the same saved model.

`--content-norm whiten` makes the content prior (content row, blends) read the catalog's text vectors
whitened (components/features/text_norm.py; the measured zero-shot recipe, docs/transfer.md),
`--text-norm` the model's inputs (every catalog's, the foundation's sources included). `--lm-tuning`
tunes the text encoder (LoRA) after an adapter/full row and records the frozen model's metrics beside
the tuned one's; `--blend-content` blends an adapter/full/scratch row with the content prior at the
weight its trained users' validation prefers.

A fraction keeps a seeded share of the target's users for training and validation (their train and
valid interactions); the test always scores every user from their full history, so rows at every
fraction are measured on the same targets.
"""
from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from quality import REPO, dataset_arguments, dataset_overrides, machine, peak_rss_mb, prepare  # noqa: E402

from components.config import Params, load_params  # noqa: E402

TARGET = "unisrec:Scientific"
ROWS = ("foundation", "zero-shot", "zero-shot-cosine", "zero-shot-blend", "zero-shot-cosine-blend", "zero-shot-served",
        "adapter", "full", "scratch", "content", "popular")
COMMON = ["validate.min_timestamp=0", "validate.min_value=null", "validate.max_value=null",
          "split.min_user_interactions=3", "split.max_history=100000", "split.cold_item_fraction=0.0",
          "split.time.cutoff=null", "split.mode=loo", "validate.min_interactions=100"]


# The MiniOneRec categories a source name stands for (amazon2018-office-industrial-minionerec).
MINIONEREC = {"office": "Office_Products", "industrial": "Industrial_and_Scientific"}


def office_as_generic(root: Path, out: Path, category: str = "Office_Products") -> Path:
    """MiniOneRec's valid/test rows as a generic interactions + items CSV pair (their train split is missing).

    Each row is one step of a user's sliding window (the last <= 10 items, then the next), valid rows
    before test rows in time: a user's sequence is their first row's history followed by every row's
    target. The order stands in for time (seconds from 0).
    """
    src = root / "amazon2018-office-industrial-minionerec"
    if (out / "interactions.csv").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rows = pd.concat([pd.read_csv(src / f"{category}.{part}.csv", usecols=["user_id", "history_item_id", "item_id"])
                      for part in ("valid", "test")], ignore_index=True)
    sequences = []
    for user, group in rows.groupby("user_id", sort=False):
        first = [int(i) for i in ast.literal_eval(group["history_item_id"].iloc[0])]
        seq = first + group["item_id"].astype(int).tolist()
        sequences.append(pd.DataFrame({"user_id": user, "item_id": seq, "timestamp": np.arange(len(seq))}))
    pd.concat(sequences).to_csv(out / "interactions.csv", index=False)
    meta = json.loads((src / f"{category}.item.json").read_text())
    items = pd.DataFrame([{"item_id": int(k), "title": v.get("title") or "",
                           "text": " ".join(x for x in (str(v.get("description") or "")[:400],
                                                       f"Brand: {v['brand']}." if v.get("brand") else "") if x)}
                          for k, v in meta.items()])
    items.to_csv(out / "items.csv", index=False)
    return out


def source_work(name: str) -> Path:
    """The work folder a source (or the Office target) is prepared in."""
    if name == "scientific":
        return REPO / "bench" / "work" / "unisrec-Scientific"
    return REPO / "bench" / "work" / f"transfer-src-{name}"


def source_overrides(name: str, root: Path) -> list[str]:
    """Params overrides that ingest, validate and split one foundation source."""
    if name == "scientific":  # a source for the Office target only (never for itself or Industrial_and_Scientific)
        return [*dataset_overrides(TARGET, root)[1], "validate.min_interactions=100"]
    if name in MINIONEREC:  # industrial (Industrial_and_Scientific): a source for the Office target only
        path = office_as_generic(root, REPO / "bench" / "work" / f"transfer-raw-{name}", MINIONEREC[name])
        return [*COMMON, "ingest.source=generic", f"ingest.path={path}", f"ingest.domain={name}",
                "ingest.generic.interactions=interactions.csv", "ingest.generic.items=items.csv",
                "ingest.generic.columns.text=text"]
    if name == "magazine":
        return [*COMMON, "ingest.source=amazon", f"ingest.path={root / 'amazon2018-magazine-subscriptions'}",
                "ingest.domain=magazines"]
    if name == "ml-100k":
        return [*COMMON, "ingest.source=movielens", f"ingest.path={root / 'ml-100k'}", "ingest.domain=movies"]
    raise SystemExit(f"unknown source {name!r}: office, industrial, magazine, ml-100k, scientific")


def prepared(params: Params, work: Path) -> dict[str, float]:
    if (work / "split" / "test.parquet").exists() and (work / "features" / "item_text.npy").exists():
        return {}
    return prepare(params, work, need_text=True)


def few_users(data, fraction: float, seed: int):
    """The target restricted to a seeded `fraction` of its users (train + valid + test of those users)."""
    from components.data.dataset import SplitData

    if fraction >= 1.0:
        return data
    users = data.users["user_id"]
    keep = users.sample(frac=fraction, random_state=seed).sort_index()
    parts = [getattr(data, p)[getattr(data, p)["user_id"].isin(keep)].drop(columns=["user_idx", "item_idx"])
             for p in ("train", "valid", "test")]
    return SplitData.from_frames(data.items, data.users[users.isin(keep)], *parts)


def foundation_dir(sources: list[str], params: Params, text_norm: str = "none") -> Path:
    pretrain = params.foundation.pretraining(params.pretrain)  # what the foundation trains with
    key = {"sources": sources, "model": params.model.model_dump(mode="json"),
           "pretrain": pretrain.model_dump(mode="json", exclude={"extra", "threads"}), "seed": params.seed}
    if text_norm != "none":  # keeps the keys of the foundations pretrained before the option
        key["text_norm"] = text_norm
    key = json.dumps(key, sort_keys=True)
    return REPO / "bench" / "work" / "transfer-foundation" / hashlib.sha1(key.encode()).hexdigest()[:10]


def ranking(scorer, data, stage: str) -> dict[str, float]:
    from components.evaluation.evaluator import evaluate_ranking

    result = evaluate_ranking(scorer.fit(data), data, stage, ks=(10, 20), progress=False)
    return {k: round(v, 5) for k, v in result.metrics.items() if k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")}


def lm_tuned(trained, train_data, data, params: Params, cfg, row_name: str) -> dict:
    """Tune the text encoder of a transferred model in place (as `transfer.transfer` does with lm_tuning on);
    the frozen model's valid and test metrics, the cost, and the tuned model's valid metrics."""
    from components.models.scoring import RecloopScorer
    from components.training.lm_tuning import tune_text_encoder
    from components.training.transfer import set_trainable

    frozen = {stage: ranking(RecloopScorer(trained, row_name), data, stage) for stage in ("valid", "test")}
    set_trainable(trained.model, cfg.mode, cfg.adapter_trains)  # adapter mode keeps its frozen part frozen
    began = time.perf_counter()
    try:
        tuned = tune_text_encoder(trained, train_data, params.lm_tuning, params.seed, threads=params.finetune.threads)
    finally:
        for p in trained.model.parameters():
            p.requires_grad_(True)
    total = time.perf_counter() - began
    encode = total - tuned.seconds  # the first encode of the catalog, before the steps; the last costs the same
    return {"frozen_metrics": frozen["test"], "frozen_valid": frozen["valid"],
            "lm_valid": ranking(RecloopScorer(trained, row_name), data, "valid"),
            "lm_tuning": {"steps": tuned.steps, "seconds": round(total, 1), "encode_seconds": round(encode, 1),
                          "seconds_per_step": round((tuned.seconds - encode) / max(tuned.steps, 1), 2),
                          "lora_parameters": tuned.encoder_trainable, "encoder_parameters": tuned.encoder_parameters,
                          "lora_share_of_encoder": round(tuned.encoder_trainable / tuned.encoder_parameters, 5),
                          "losses": [round(x, 4) for x in tuned.losses],
                          "config": params.lm_tuning.model_dump(mode="json")}}


def served_ranking(trained, data, split_dir: Path, features_dir: Path, work: Path, metrics: dict,
                   batch: int = 256) -> tuple[dict[str, float], str]:
    """(HR@10 and NDCG@10, the answers' `scoring`) of the service's answers for every test target: `trained`
    saved and packaged as `recloop transfer` and `recloop package` do, answered by `BundleRecommender` from
    each user's train + valid events."""
    from components.models.artifacts import save_trained
    from components.serving.bundle import load_bundle, write_bundle
    from components.serving.recommender import BundleRecommender
    from components.serving.schemas import HistoryEvent, RecommendRequest

    shutil.rmtree(work, ignore_errors=True)
    save_trained(trained, work / "model", metrics)
    write_bundle(work / "model", split_dir, features_dir, work / "bundle")
    recommender = BundleRecommender(load_bundle(work / "bundle"), "bench").prepare(load_encoder=False)
    history = data.history("test")
    ids = data.items["item_id"].astype(str).to_numpy()
    requests = [RecommendRequest(k=10, history=[
        HistoryEvent(item_id=ids[r.item_idx], timestamp=int(r.timestamp), event=r.event,
                     value=None if pd.isna(r.value) else float(r.value), domain=r.domain) for r in rows.itertuples()])
        for _, rows in history.groupby("user_idx", sort=True)]
    users = np.sort(history["user_idx"].unique())
    answers = {}
    for start in range(0, len(requests), batch):
        chunk = requests[start:start + batch]
        for user, answer in zip(users[start:start + batch], recommender.finish([recommender.start(r) for r in chunk])):
            answers[user] = [i.item_id for i in answer.items]
    hits, gains = [], []
    for target in data.targets("test").itertuples():
        top = answers.get(target.user_idx, [])
        rank = top.index(ids[target.item_idx]) + 1 if ids[target.item_idx] in top else 0
        hits.append(rank > 0)
        gains.append(1 / np.log2(rank + 1) if rank else 0.0)
    shutil.rmtree(work, ignore_errors=True)
    return {"hr@10": round(float(np.mean(hits)), 5), "ndcg@10": round(float(np.mean(gains)), 5)}, recommender.scoring


def main() -> None:
    parser = dataset_arguments(__doc__)
    parser.set_defaults(dataset=TARGET)
    parser.add_argument("--row", required=True, help=f"comma-separated: {', '.join(ROWS)}")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the target's users trained on")
    parser.add_argument("--sources", default=None,
                        help="foundation sources: office, magazine, ml-100k, and for the Office target scientific "
                             "and industrial (default: office,ml-100k; for the Office target scientific,ml-100k)")
    parser.add_argument("--foundation", type=Path, default=None,
                        help="the foundation folder the transfer rows adopt (default: the one keyed by the sources, "
                             "model and pretrain params; name it when those params have gained fields since)")
    parser.add_argument("--blend-on", default=None,
                        help="zero-shot blend rows: the prepared source catalogs the content prior's weight is chosen "
                             "on (default: --sources); never the target")
    parser.add_argument("--text-norm", default="none", choices=("none", "standardize", "whiten"),
                        help="per-catalog normalisation of every catalog's text vectors as the model reads them "
                             "(features/text_norm.py): the foundation's sources and the target alike")
    parser.add_argument("--content-norm", default="none", choices=("none", "standardize", "whiten"),
                        help="the same for the vectors the content prior reads (content row, zero-shot blends)")
    parser.add_argument("--lm-tuning", action="store_true",
                        help="adapter/full rows: then tune the text encoder (LoRA, lm_tuning.*) as `recloop transfer` "
                             "does with lm_tuning.enabled; the JSON holds the metrics before (frozen) and after")
    parser.add_argument("--blend-content", action="store_true",
                        help="adapter/full/scratch rows: blend the trained model with the content prior "
                             "(--content-norm vectors), the weight chosen on the trained users' validation")
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "transfer")
    for action in parser._actions:
        if action.dest == "dataset":  # the target is Scientific unless told otherwise
            action.required = False
    args = parser.parse_args()

    from components.data.dataset import SplitData
    from components.evaluation.baselines import ContentKNN, MostPopular
    from components.evaluation.evaluator import evaluate_ranking
    from components.features.featurize import load_item_text
    from components.features.text_norm import normalise_text
    from components.models.foundation import load_foundation, save_foundation
    from components.models.scoring import RecloopScorer
    from components.training.foundation import describe_sources, pretrain_foundation, tag_domain
    from components.training.prior_weight import add_own_prior
    from components.training.stage import load_inputs
    from components.training.transfer import transfer_model
    from components.training.variants import variant
    from components.training.zero_shot import BlendScorer, choose_blend_weight, zero_shot_scorer

    args.sources = args.sources or ("scientific,ml-100k" if args.dataset == "office" else "office,ml-100k")
    sources = [s for s in args.sources.split(",") if s]
    if args.dataset == "office":  # Office_Products as the target: prepared as the office source is
        name, base, target_work = "Office_Products", source_overrides("office", args.root), source_work("office")
    else:
        name, base = dataset_overrides(args.dataset, args.root)
        target_work = REPO / "bench" / "work" / args.dataset.replace(":", "-")
    target_key = "office" if args.dataset == "office" else "scientific" if args.dataset == TARGET else None
    # Industrial_and_Scientific is Scientific's own Amazon category: never a source or blend catalog for it.
    banned = {target_key} | ({"industrial"} if target_key == "scientific" else set())
    if banned & {*sources, *(args.blend_on.split(",") if args.blend_on else [])}:
        raise SystemExit(f"{args.dataset} is the target: {', '.join(sorted(banned - {None}))} can be neither a "
                         "foundation source nor a blend catalog")
    params = load_params(args.params, [*base, "tracking.uri=null", *args.overrides])
    prep = prepared(params, target_work)
    data = SplitData.load(target_work / "split")
    raw_text = load_item_text(target_work / "features", data.n_items)
    text = normalise_text(raw_text, args.text_norm)  # what the model reads
    content_text = normalise_text(raw_text, args.content_norm)  # what the content prior reads
    train_data = few_users(data, args.fraction, params.seed)
    found_dir = args.foundation or foundation_dir(sources, params, args.text_norm)
    args.results.mkdir(parents=True, exist_ok=True)

    def prepare_source(source: str) -> dict[str, float]:
        """A foundation or blend catalog prepared in its work folder (once); the seconds each step took."""
        params_of = load_params(args.params, [*source_overrides(source, args.root), *args.overrides])
        return {f"{source}.{k}": v for k, v in prepared(params_of, source_work(source)).items()}

    for row_name in [r for r in args.row.split(",") if r]:
        began = time.perf_counter()
        info: dict = {}
        scorer = None
        trained = result = None  # the rows that train: their model and loop result, for --blend-content
        if row_name == "foundation":
            datasets = []
            for source in sources:
                work = source_work(source)
                prep |= prepare_source(source)
                src, src_text = load_inputs(work / "split", work / "features")
                datasets.append((tag_domain(src, source), normalise_text(src_text, args.text_norm)))
            began = time.perf_counter()
            found, result = pretrain_foundation(datasets, params.model, params.foundation.pretraining(params.pretrain),
                                                params.seed)
            save_foundation(found, found_dir, {"valid_ndcg@10": result.best_score, "epochs": result.epochs})
            info = {"sources": describe_sources(datasets), "epochs": result.epochs, "best_epoch": result.best_epoch,
                    "valid_ndcg@10": round(result.best_score, 5), "transferable_parameters": found.parameters(),
                    "foundation_dir": str(found_dir.relative_to(REPO))}
        elif row_name == "zero-shot-served":
            from components.config import FoundationSource
            from components.training.transfer import with_content_prior

            found = load_foundation(found_dir)
            cfg = params.transfer.model_copy(update={"mode": "zero-shot", "content_norm": args.content_norm})
            trained, _, info = transfer_model(found, data, text, cfg, params.finetune, params.seed,
                                              labels=params.labels)
            names = [s for s in (args.blend_on or args.sources).split(",") if s]
            for n in names:
                prep |= prepare_source(n)
            blend_on = [FoundationSource(split=source_work(n) / "split", features=source_work(n) / "features",
                                         domain=n) for n in names]
            info |= with_content_prior(trained, found, data, text, cfg, blend_on,
                                       params.evaluate.content.history_items, params.labels)
            info |= {"foundation_sources": found.sources, "foundation_dir": str(found_dir.resolve().relative_to(REPO)),
                     "library_metrics": ranking(RecloopScorer(trained, row_name), data, "test")}
            began_serving = time.perf_counter()
            served, info["served_scoring"] = served_ranking(
                trained, data, target_work / "split", target_work / "features",
                REPO / "bench" / "work" / "transfer-served", {**info, "mode": "zero-shot"})
            info |= {"served_metrics": served, "serve_seconds": round(time.perf_counter() - began_serving, 1)}
        elif row_name.startswith("zero-shot-"):
            found = load_foundation(found_dir)
            cosine = "cosine" in row_name
            scorer = zero_shot_scorer(found, data, text, cosine=cosine, name=row_name)
            info = {"mode": "zero-shot", "scoring": "cosine" if cosine else "dot",
                    "foundation_sources": found.sources, "foundation_dir": str(found_dir.resolve().relative_to(REPO))}
            if row_name.endswith("-blend"):
                names = [s for s in (args.blend_on or args.sources).split(",") if s]
                for n in names:
                    prep |= prepare_source(n)
                raw = [load_inputs(source_work(n) / "split", source_work(n) / "features") for n in names]
                catalogs = [(d, normalise_text(t, args.text_norm)) for d, t in raw]
                choice = choose_blend_weight(
                    found, catalogs, history_items=params.evaluate.content.history_items, cosine=cosine,
                    content_texts=[normalise_text(t, args.content_norm) for _, t in raw])
                scorer = BlendScorer(scorer, ContentKNN(content_text, params.evaluate.content.history_items),
                                     choice.weight, row_name).fit(data)
                info |= {"blend_weight": choice.weight, "blend_chosen_on": names,
                         "blend_valid_ndcg@10": {str(w): round(v, 5) for w, v in choice.valid_ndcg.items()},
                         "blend_valid_ndcg@10_per_catalog": {
                             n: {str(w): round(v, 5) for w, v in c.items()} for n, c in zip(names, choice.per_catalog)}}
        elif row_name in ("zero-shot", "adapter", "full"):
            found = load_foundation(found_dir)
            cfg = params.transfer.model_copy(update={"mode": row_name})
            trained, result, info = transfer_model(found, train_data, text, cfg, params.finetune, params.seed,
                                                   labels=params.labels, pretrain=params.pretrain)
            info = {k: v for k, v in info.items() if not k.startswith("valid_")}
            if result is not None:
                info |= {"epochs": result.epochs, "best_epoch": result.best_epoch,
                         "valid_ndcg@10": round(result.best_score, 5)}
            info["foundation_sources"] = found.sources
            info["foundation_dir"] = str(found_dir.resolve().relative_to(REPO))
            scorer = RecloopScorer(trained, row_name)
            if args.lm_tuning and result is not None:
                info |= lm_tuned(trained, train_data, data, params, cfg, row_name)
        elif row_name == "scratch":
            # The prior only with --blend-content, as for the transferred rows (finetune.content_prior is on by default).
            finetune = params.finetune.model_copy(update={"content_prior": False})
            model = variant("recloop", params.model, params.pretrain, finetune, params.labels, text, params.seed)
            model.fit(train_data)
            trained, result = model.trained_, model.result_
            scorer = RecloopScorer(trained, "scratch")
            info = {"epochs": {"pretrain": model.pretrain_result_.epochs, "finetune": model.result_.epochs},
                    "trainable_parameters": sum(p.numel() for p in model.trained_.model.parameters())}
            info["parameters"] = info["trainable_parameters"]
        elif row_name == "content":  # no training: the user's own history and the items' text
            scorer = ContentKNN(content_text, params.evaluate.content.history_items).fit(data)
        elif row_name == "popular":  # popularity over every user's training interactions
            scorer = MostPopular().fit(data)
        else:
            raise SystemExit(f"unknown row {row_name!r}: {', '.join(ROWS)}")
        train_seconds = time.perf_counter() - began
        # What `recloop transfer` serves with transfer.content_prior, and `recloop finetune` with finetune.content_prior.
        if args.blend_content and row_name in ("adapter", "full", "scratch") and result is not None:
            add_own_prior(trained, result, train_data, raw_text, args.content_norm,
                          params.evaluate.content.history_items, params.labels)
            scorer = RecloopScorer(trained, f"{row_name}-blend")
            info |= result.after | {"blend_seconds": round(time.perf_counter() - began - train_seconds, 1)}
        metrics = info.pop("served_metrics", {})
        if scorer is not None:
            if isinstance(scorer, (RecloopScorer, BlendScorer)):
                scorer.fit(data)  # histories of every user; the model saw only train_data's
            result = evaluate_ranking(scorer, data, "test", ks=(10, 20), progress=False)
            metrics = {k: round(v, 5) for k, v in result.metrics.items()
                       if k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "mrr@10", "coverage@10")}
        fraction = (None if row_name == "foundation" else 1.0 if row_name in ("content", "popular")
                    or row_name.startswith("zero-shot") else args.fraction)
        row = {"dataset": args.dataset, "row": row_name, "fraction": fraction,
               "train_users": train_data.n_users if fraction is not None and fraction < 1 else data.n_users,
               "users": data.n_users, "items": data.n_items,
               "sources": sources, "tag": args.tag, "overrides": args.overrides, "metrics": metrics,
               "text_norm": args.text_norm, "content_norm": args.content_norm,
               "train_seconds": round(train_seconds, 1), **info,
               "prepare_seconds": {k: round(v, 1) for k, v in prep.items()},
               "peak_rss_mb": round(peak_rss_mb(), 1), **provenance(),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "load_average": [round(x, 2) for x in os.getloadavg()],
               "params": {"model": params.model.model_dump(mode="json"),
                          "pretrain": params.pretrain.model_dump(mode="json", exclude={"extra"}),
                          "finetune": params.finetune.model_dump(mode="json"),
                          "foundation_lr": params.foundation.lr,
                          "transfer": params.transfer.model_dump(mode="json")}}
        stamp = row["date"].replace(":", "").replace("+0000", "Z")
        frac = f"-{fraction:g}" if fraction is not None else ""
        out = args.results / f"{name}-{row_name}{frac}{'-' + args.tag if args.tag else ''}-{stamp}.json"
        out.write_text(json.dumps(row, indent=1) + "\n")
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"{row_name} (fraction {args.fraction:g}): {shown or info.get('valid_ndcg@10')}; "
              f"{train_seconds:.0f}s; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
