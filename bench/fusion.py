"""recloop with and without the knowledge graph in the item tower: quality, tail, cold items, explanations.

Prepares the embedded MovieLens latest-small (ingest -> validate -> split -> featurize, cached in the
bench's work folder) in one of two splits: `default` (params.yaml's: overall and tail quality) or `cold` (2% of
the items held out of training: the cold slice. 10%, the issue's share, holds out nearly every valid and
test target of this small catalog, so validation sees only cold items and early stopping ends training
on noise within six epochs). It validates the MKR/Satori movie graph against the catalog (`recloop
kg`'s library function), then trains one variant per run (pretraining, then multi-task fine-tuning,
as `make run` does) and evaluates it on the test targets with the full-ranking evaluator.
Explanation coverage: for a seeded sample of test users, the share of their top-10 items that come
with at least one named fact (a knowledge-graph relation or an attribute value shared with the
history, `components/serving/facts.py`), and a few explanations as text. One JSON per run goes to
bench/results/fusion/; `--table` prints the Markdown table of every result there.

`--dataset lastfm` runs the same on HetRec Last.fm 2K (`ingest.source=lastfm`) with the MKR/Satori music
graph. HetRec has no timestamps: the adapter orders each user's artists at random, seeded by
`ingest.order_seed` (params.yaml's 0 whatever the run's seed, so every seed sees the same split), and
leave-one-out on that order is a random hold-out per user, the protocol of the KG papers on this data.

    .venv/bin/python bench/fusion.py --variant base --seed 42
    .venv/bin/python bench/fusion.py --variant kg --seed 42 --split cold
    .venv/bin/python bench/fusion.py --dataset lastfm --variant kg --seed 42
    .venv/bin/python bench/fusion.py --table                      # --dataset lastfm: the Last.fm rows

Variants (model params on top of params.yaml): base = ID + text + attributes (the default tower);
kg = base + the graph's neighbourhoods; kg-gates = kg with a learned gate per source; attention and
kg-attention = base and kg fused by per-item attention over the sources each item has; no-text and
kg-no-text (ID + attributes, with and without the graph); kg-vectors = base + a spectral embedding of
each item's graph facts through the extra-vector door; map and kg-map = base and kg where an item
without a trained ID gets one mapped from its content (`model.id_mapping`, ID dropout 0.5; map-dropout0.1
and kg-map-dropout0.1 with params.yaml's 0.1); transe and kg-transe = base and kg plus the entity embeddings
PyKEEN's TransE learns from the graph alone (`recloop kg-embed`'s library function with params.yaml's kg_embed
and the run's seed), through the extra-vector door; kg-transe-drop = kg-transe with both graph sources dropped
from half the items per training step (`model.source_dropout`). Training:
the pipeline's early stopping, pretraining capped at --minutes and fine-tuning at half of it, so that
a run stays within a few minutes on two cores.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from quality import DATASETS, REPO, machine, peak_rss_mb, prepare  # noqa: E402

from components.config import KGConfig, load_params  # noqa: E402

# Items without a trained ID get one mapped from their content sources (model.id_mapping, docs/fusion.md),
# with the ID dropout and alignment weight that met the cold-start condition on Scientific.
ID_MAPPING = {"model.id_mapping": True, "model.id_dropout": 0.5, "pretrain.weights.id_mapping": 1.0,
              "finetune.weights.id_mapping": 1.0}
VARIANTS: dict[str, dict] = {
    "base": {},
    "kg": {"model.use_kg": True},
    "kg-gates": {"model.use_kg": True, "model.source_gates": True},
    "attention": {"model.source_attention": True},
    "kg-attention": {"model.use_kg": True, "model.source_attention": True},
    "kg-no-text": {"model.use_kg": True, "model.use_text": False},
    "no-text": {"model.use_text": False},
    # The graph through the extra-vector door: a spectral embedding of each item's (relation, entity) facts.
    "kg-vectors": {"model.sources.vectors": [{"name": "kg_svd", "path": "KG_SVD"}]},
    "map": ID_MAPPING,
    "kg-map": {"model.use_kg": True, **ID_MAPPING},
    "map-dropout0.1": {**ID_MAPPING, "model.id_dropout": 0.1},
    "kg-map-dropout0.1": {"model.use_kg": True, **ID_MAPPING, "model.id_dropout": 0.1},
    # Entity embeddings pretrained on the graph alone (PyKEEN TransE), through the extra-vector door.
    "transe": {"model.sources.vectors": [{"name": "kg_transe", "path": "KG_TRANSE"}]},
    "kg-transe": {"model.use_kg": True, "model.sources.vectors": [{"name": "kg_transe", "path": "KG_TRANSE"}]},
    # kg-transe with both graph sources dropped from half the items per step: the model must score the items the
    # graph does not link (most of the tail) beside those it does.
    "kg-transe-drop": {"model.use_kg": True, "model.sources.vectors": [{"name": "kg_transe", "path": "KG_TRANSE"}],
                       "model.source_dropout": {"kg": 0.5, "kg_transe": 0.5}},
}
KG_SVD_DIM = 32
# Relative to the repository (the working directory of a run), so that results name no machine path.
WORKS = {"movielens": {"default": Path("bench") / "work" / "fusion-ml-latest-small",
                       "cold": Path("bench") / "work" / "fusion-ml-latest-small-cold2"},
         "lastfm": {"default": Path("bench") / "work" / "fusion-lastfm",
                    "cold": Path("bench") / "work" / "fusion-lastfm-cold2"}}
SPLITS = {"default": [], "cold": ["split.cold_item_fraction=0.02"]}
# Each dataset's folder under --root (None: params.yaml's embedded data) and its graph under kg-mkr-satori/.
DATA = {"movielens": (None, "movie"), "lastfm": ("hetrec2011-lastfm-2k", "music")}
# Last.fm's time is a synthetic order from 1970 (no live windows) and its value a listen count (1 and up).
LASTFM = ["ingest.source=lastfm", "ingest.domain=music", "validate.min_timestamp=0", "validate.min_value=1",
          "validate.max_value=null", "split.time.cutoff=null"]
RESULTS = REPO / "bench" / "results" / "fusion"
EXPLAIN_USERS = 300
SAMPLE_ITEMS = 6


def explanation_coverage(trained, data, seed: int, k: int = 10) -> dict:
    """Share of recommended items (top-k of sampled test users) with >= 1 fact, >= 1 KG fact; a text sample."""
    import numpy as np
    import torch

    from components.models.scoring import RecloopScorer
    from components.serving.facts import FactFinder

    scorer = RecloopScorer(trained).fit(data)
    history = data.history("test")
    users = np.sort(np.random.default_rng(seed).choice(data.n_users, min(EXPLAIN_USERS, data.n_users), replace=False))
    scores = scorer.score(data, users, "test")
    with torch.no_grad():
        finder = FactFinder(trained.model, trained.vocab, trained.model.catalog())
    by_user = history.groupby("user_idx")["item_idx"].apply(lambda s: s.to_numpy())
    titles = data.items["title"].astype(str).tolist()
    max_len = trained.model.config.max_len
    counts = {"items": 0, "with_fact": 0, "with_kg_fact": 0}
    sample = []
    for row, user in enumerate(users):
        seen = by_user.get(user, np.zeros(0, np.int64))
        s = scores[row].clone()
        s[torch.as_tensor(seen, dtype=torch.long)] = -torch.inf
        top = torch.topk(s, k).indices.numpy()
        recent = seen[-max_len:]
        for i in top:
            facts = finder.facts(int(i), recent, limit=None)
            counts["items"] += 1
            counts["with_fact"] += bool(facts)
            counts["with_kg_fact"] += any(f.kind == "kg" for f in facts)
            # The sample: the first explanations that name a KG fact (any fact without a graph), one per user.
            wanted = any(f.kind == "kg" for f in facts) or (finder.kg is None and bool(facts))
            if wanted and len(sample) < SAMPLE_ITEMS and all(x["user"] != data.users["user_id"].iloc[user]
                                                              for x in sample):
                sample.append({"user": str(data.users["user_id"].iloc[user]), "item": titles[i],
                               "facts": [f.text(titles[f.history_item]) for f in _shown(facts)]})
    n = max(counts["items"], 1)
    return {"users": len(users), "k": k, "fact_coverage": round(counts["with_fact"] / n, 4),
            "kg_fact_coverage": round(counts["with_kg_fact"] / n, 4), "sample": sample}


def cold_ranking(trained, data, k: int = 10) -> dict | None:
    """Cold test targets ranked among the cold items only (seen ones filtered): how well the item-side sources
    place a new item against the other new items. In the full catalog an item with a trained ID outscores them."""
    import numpy as np
    import torch

    from components.models.scoring import RecloopScorer

    cold = data.items["cold"].to_numpy(bool)
    targets = data.targets("test")
    targets = targets[cold[targets["item_idx"].to_numpy()]]
    if targets.empty:
        return None
    users = targets["user_idx"].to_numpy()
    scores = RecloopScorer(trained).fit(data).score(data, users, "test")  # (T, N)
    seen = data.seen_matrix(data.history("test"))[users].toarray().astype(bool)
    scores = scores.masked_fill(torch.from_numpy(seen), -torch.inf)
    # Where the cold targets stand in the full catalog (0 = top): R@10 alone cannot show a move below the top 10.
    full = (scores > scores[torch.arange(len(users)), torch.as_tensor(targets["item_idx"].to_numpy())][:, None])
    full_rank = full.sum(1).numpy()
    scores = scores[:, torch.from_numpy(cold)]  # (T, cold)
    column = np.cumsum(cold) - 1  # item_idx -> its column among the cold items
    target = scores[torch.arange(len(users)), torch.as_tensor(column[targets["item_idx"].to_numpy()])]
    rank = (scores > target[:, None]).sum(1).numpy()
    hit = rank < k
    return {"size": len(targets), "candidates": int(cold.sum()), f"hr@{k}": round(float(hit.mean()), 5),
            f"ndcg@{k}": round(float(np.where(hit, 1 / np.log2(rank + 2), 0).mean()), 5),
            "full_catalog_median_rank": float(np.median(full_rank)), "full_catalog_hr@100": round(float(
                (full_rank < 100).mean()), 5)}


def source_weights(tower) -> dict:
    """Each source's mean weight in the fusion over the items that have it (1 for the plain sum), and its spread."""
    import torch

    with torch.no_grad():
        items = torch.arange(tower.config.n_items)
        weights = tower.source_weights(items)  # (N, S)
        present = torch.stack([p for _, p in tower.source_vectors(items).values()], -1)
    return {name: {"items": int(present[:, k].sum()), "mean": round(float(weights[present[:, k], k].mean()), 4),
                   "std": round(float(weights[present[:, k], k].std()), 4)}
            for k, name in enumerate(tower.source_names()) if present[:, k].any()}


def _shown(facts: list) -> list:
    """The top three facts, and the best KG fact when none of them is one."""
    top = facts[:3]
    kg = [f for f in facts if f.kind == "kg"]
    return top if not kg or any(f.kind == "kg" for f in top) else [*top, kg[0]]


def run(variant: str, split: str, seed: int, minutes: float, root: Path, dataset: str = "movielens",
        extra: list[str] | None = None, tag: str = "") -> Path:
    from components.data.dataset import SplitData
    from components.evaluation.evaluator import evaluate_ranking
    from components.evaluation.metrics import head_items
    from components.features.featurize import load_item_text
    from components.features.kg_embeddings import kg_embed
    from components.training.variants import RecloopVariant
    from components.validation.kg import kg_stage

    work = WORKS[dataset][split]
    folder, graph = DATA[dataset]
    source = [] if folder is None else [*LASTFM, f"ingest.path={root / folder}"]
    embed = load_params(REPO / "params.yaml", []).kg_embed
    # Cached per seed and every kg_embed setting: a changed lr or batch size must not reuse an old table.
    settings = hashlib.sha256(json.dumps(embed.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    transe = work / f"kg_{embed.model.lower()}-{settings}-seed{seed}.parquet"
    files = {"KG_SVD": str(work / "kg_svd.npz"), "KG_TRANSE": str(transe)}
    uses_transe = "KG_TRANSE" in json.dumps(VARIANTS[variant])
    changes = [f"{k}={_filled(json.dumps(v), files)}" for k, v in VARIANTS[variant].items()]
    overrides = [*source, *SPLITS[split], "tracking.uri=null", f"seed={seed}", f"pretrain.max_minutes={minutes}",
                 f"finetune.max_minutes={minutes / 2}", f"model.sources.kg={work / 'kg'}", *changes, *(extra or [])]
    params = load_params(REPO / "params.yaml", overrides)
    prep = {}
    if not ((work / "split" / "test.parquet").exists() and (work / "features" / "item_text.npy").exists()):
        prep = prepare(params, work, need_text=True)
    if not (work / "kg" / "links.parquet").exists():
        print(kg_stage(KGConfig(path=root / "kg-mkr-satori" / graph), work / "validated" / "items.parquet",
                       work / "kg").describe(), file=sys.stderr)
    data = SplitData.load(work / "split")
    text = load_item_text(work / "features", data.n_items)
    if not (work / "kg_svd.npz").exists():
        write_kg_svd(work, data, work / "kg_svd.npz")
    embedded = None  # the PyKEEN run, when this run made the file (cached per seed and settings)
    if uses_transe and not transe.exists():
        embedded = kg_embed(embed, work / "kg", transe, seed, progress=False)
        print(embedded.describe(), file=sys.stderr)
    ran = provenance()
    model = RecloopVariant(params.model, params.pretrain, params.finetune, params.labels,
                           text if params.model.use_text else None, seed, f"recloop-{variant}")
    began = time.perf_counter()
    model.fit(data)
    train_seconds = time.perf_counter() - began
    head_share = params.evaluate.head_share  # one value for the evaluator's tail slice and the graph's split of it
    result = evaluate_ranking(model, data, "test", ks=(10,), progress=False, head_share=head_share)
    linked = model.trained_.model.tower.has_kg.numpy() if params.model.use_kg else None
    per = result.per_target
    slices = {s: {k: round(v, 5) for k, v in result.slices[s].items() if k in ("size", "hr@10", "ndcg@10")}
              for s in ("head_items", "tail_items", "cold_items") if s in result.slices}
    kg_items = _kg_items(work, data)
    on_kg = kg_items[per["item_idx"].to_numpy()]
    # The tail split by the graph's reach: what the graph can lift (linked) and what it cannot (the rest).
    on_tail = ~head_items(data.item_popularity(), head_share)[per["item_idx"].to_numpy()]
    for name, rows in (("kg_linked_items", on_kg), ("tail_kg_linked", on_tail & on_kg),
                       ("tail_unlinked", on_tail & ~on_kg)):
        slices[name] = {"size": int(rows.sum()), "hr@10": round(float(per.loc[rows, "hr@10"].mean()), 5),
                        "ndcg@10": round(float(per.loc[rows, "ndcg@10"].mean()), 5)}
    row = {
        "dataset": dataset, "variant": variant, "split": split, "seed": seed, "changes": VARIANTS[variant],
        "set": extra or [], "tag": tag,
        "users": data.n_users, "items": data.n_items,
        "cold_items": int(data.items["cold"].sum()), "kg_linked_items": int(kg_items.sum()),
        "model_linked_items": None if linked is None else int(linked.sum()),
        "metrics": {k: round(result.metrics[k], 5) for k in ("hr@10", "ndcg@10", "mrr", "coverage@10")},
        "slices": slices, "cold_among_cold": cold_ranking(model.trained_, data),
        "source_weights": source_weights(model.trained_.model.tower),
        "explanations": explanation_coverage(model.trained_, data, seed),
        "train_seconds": round(train_seconds, 1), "pretrain_epochs": model.pretrain_result_.epochs,
        "epochs": model.result_.epochs,
        "best_epoch": model.result_.best_epoch, "stopped_early": model.result_.stopped_early,
        "content_prior": (model.result_.after or {}).get("content_prior"),  # finetune.content_prior's choice
        "prepare_seconds": {k: round(v, 1) for k, v in prep.items()},
        "kg_embed": None if not uses_transe else {
            **embed.model_dump(mode="json"), "seed": seed, "file": str(transe),
            "seconds": None if embedded is None else round(embedded.seconds, 1),
            "final_loss": None if embedded is None else round(embedded.final_loss, 5)},
        "peak_rss_mb": round(peak_rss_mb(), 1), **ran,
        "tree_changed_during_run": provenance()["git_diff_sha256"] != ran["git_diff_sha256"],
        "command": " ".join(["bench/fusion.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "params": {"model": params.model.model_dump(mode="json"), "finetune": params.finetune.model_dump(mode="json")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = "" if dataset == "movielens" else f"{dataset}-"  # MovieLens results keep their names
    out = RESULTS / f"{prefix}{split}-{variant}{'-' + tag if tag else ''}-seed{seed}-{row['date'].replace(':', '').replace('+0000', 'Z')}.json"
    out.write_text(json.dumps(row, indent=1) + "\n")
    return out


def _filled(text: str, files: dict[str, str]) -> str:
    """A variant's JSON change with its placeholders (KG_SVD, KG_TRANSE) replaced by the run's files."""
    for placeholder, path in files.items():
        text = text.replace(placeholder, path)
    return text


def write_kg_svd(work: Path, data, path: Path) -> None:
    """Items' KG vectors for the extra-vector source: truncated SVD of the TF-IDF-weighted item x (relation,
    entity) incidence of linked items; unlinked items get no row (they lack the source)."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    triples = pd.read_parquet(work / "kg" / "triples.parquet")
    links = pd.read_parquet(work / "kg" / "links.parquet")
    facts = links.merge(triples, left_on="entity", right_on="head")
    fact = pd.Index(pd.unique(facts["relation"] + "|" + facts["tail"]))
    items = pd.Index(pd.unique(facts["item_id"]))
    matrix = sp.csr_matrix((np.ones(len(facts)), (items.get_indexer(facts["item_id"]),
                                                  fact.get_indexer(facts["relation"] + "|" + facts["tail"]))),
                           shape=(len(items), len(fact)))
    vectors = TruncatedSVD(KG_SVD_DIM, random_state=0).fit_transform(TfidfTransformer().fit_transform(matrix))
    keep = items.isin(data.items["item_id"].astype(str))
    np.savez(path, item_ids=items[keep].to_numpy(dtype=str), vectors=vectors[keep].astype(np.float32))


def _kg_items(work: Path, data):
    """Items of the catalog the validated graph links (whatever the variant reads)."""
    import pandas as pd

    links = pd.read_parquet(work / "kg" / "links.parquet")
    return data.items["item_id"].astype(str).isin(links["item_id"]).to_numpy()


def table(dataset: str = "movielens") -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    rows = [r for r in rows if r.get("dataset", "movielens") == dataset]  # rows before Last.fm name none
    print("| split | variant | seed | N@10 | R@10 | tail N@10 | cold R@10 (n) | cold among cold R@10 | KG-linked N@10 "
          "| facts | KG facts | epochs | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r.get("split", "default"), r["variant"], r["seed"])):
        s, e = r["slices"], r["explanations"]
        print(f"| {r.get('split', 'default')} | {r['variant']}{' (' + r['tag'] + ')' if r.get('tag') else ''} | {r['seed']} "
              f"| {r['metrics']['ndcg@10']:.4f} | {r['metrics']['hr@10']:.4f} "
              f"| {s['tail_items']['ndcg@10']:.4f} | {s['cold_items']['hr@10']:.4f} ({s['cold_items']['size']}) "
              f"| {_among_cold(r)} | {s['kg_linked_items']['ndcg@10']:.4f} "
              f"| {e['fact_coverage']:.2f} | {e['kg_fact_coverage']:.2f} "
              f"| {r['epochs']} | {r['train_seconds']:.0f} |")


def _among_cold(row: dict) -> str:
    cold = row.get("cold_among_cold")
    return "—" if cold is None else f"{cold['hr@10']:.4f} (of {cold['candidates']})"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATA), default="movielens",
                        help="movielens: params.yaml's embedded data; lastfm: HetRec Last.fm 2K under --root")
    parser.add_argument("--variant", choices=list(VARIANTS), default="base")
    parser.add_argument("--split", choices=list(SPLITS), default="default")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--minutes", type=float, default=3.0,
                        help="pretraining budget (pretrain.max_minutes); fine-tuning gets half")
    parser.add_argument("--root", type=Path, default=DATASETS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training params change on top of the variant's, e.g. pretrain.lr=0.001 (not the data's: "
                             "the prepared split is cached per dataset and split)")
    parser.add_argument("--tag", default="", help="added to the result file's name")
    parser.add_argument("--table", action="store_true", help="print the table of bench/results/fusion/ and exit")
    args = parser.parse_args()
    os.chdir(REPO)
    if args.table:
        table(args.dataset)
        return
    print(f"wrote {run(args.variant, args.split, args.seed, args.minutes, args.root, args.dataset, args.set, args.tag)}", file=sys.stderr)


if __name__ == "__main__":
    main()
