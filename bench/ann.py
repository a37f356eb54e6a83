"""Approximate nearest-neighbour retrieval for big catalogs: index kinds side by side against exact scoring.

Two kinds of vectors (`--vectors`):
- `random`: items and queries standard normal, float32, `--dim` wide. Isotropic random vectors are the
  hardest case for an index (no structure to follow): they measure speed, and recall at its worst.
- `model`: realistic vectors from a trained model's bundle (`--bundle`): its catalog vectors (the item
  tower's, `model.catalog()`) and its known users' states (the encoder's, as the service computes
  them), both by `BundleRecommender.prepare`. The catalog of `--sizes` items is drawn from a Gaussian
  mixture fitted to the trained catalog's vectors (`--components` components, full covariances, seeded:
  the clusters, their shapes and the spread of norms that inner-product search depends on); the
  queries are the real user states, unchanged.

The score is the inner product, as the recommender's (item vectors @ user state). For each catalog
size and index (`--indexes`, `name:param`): build time (all cores) and memory growth, then for each
search breadth recall@k against the exact top k and the latency of one query at a time on one
thread (the service's request path), p50/p99, next to exact scoring's in the same run (numpy matmul +
torch.topk, what the recommender does without an index). The sweep stops at the first breadth that
reaches `--target` or answers slower than exact scoring. Last, `components.serving.ann.AnnIndex` as
the service builds it: calibrated on `--calibration` of the queries, measured on the others.

    python bench/ann.py --sizes 100000 1000000                    # random vectors
    python bench/ann.py --vectors model --bundle PATH --sizes 1000000
Writes bench/results/ann/ann-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.provenance import provenance  # noqa: E402
from components.serving.ann import AnnIndex, augment  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ann"
CACHE = Path(__file__).resolve().parent / "work" / "ann"
EFS = (64, 128, 256, 512, 1024, 2048)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) exact best rows by inner product."""
    out = []
    for chunk in np.array_split(queries, max(1, len(queries) // 64)):
        out.append(torch.topk(torch.from_numpy(chunk @ items.T), k, dim=1).indices.numpy())
    return np.concatenate(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def timed(search, queries: np.ndarray) -> dict:
    """Each query alone, one thread: latency percentiles (ms)."""
    times = []
    with threadpool_limits(1):
        torch.set_num_threads(1)
        for q in queries:
            start = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - start) * 1e3)
        torch.set_num_threads(os.cpu_count() or 1)
    times = np.array(times)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3),
            "mean_ms": round(float(times.mean()), 3)}


class FaissHnsw:
    """faiss IndexHNSWFlat, `m` links per node; `l2`: over norm-augmented vectors (MIPS as L2 search)."""

    breadths = EFS

    def __init__(self, items: np.ndarray, m: int, ef_construction: int, l2: bool) -> None:
        import faiss
        self.faiss, self.l2 = faiss, l2
        self.max_norm = float(np.linalg.norm(items, axis=1).max())
        data = augment(items, self.max_norm) if l2 else items
        self.index = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(data)

    def _queries(self, q: np.ndarray) -> np.ndarray:
        return np.hstack([q, np.zeros((len(q), 1), np.float32)]) if self.l2 else q

    def search(self, k: int, breadth: int):
        params = self.faiss.SearchParametersHNSW(efSearch=max(breadth, k))
        return lambda q: self.index.search(self._queries(q[None]), k, params=params)[1][0]

    def batch(self, queries: np.ndarray, k: int, breadth: int) -> np.ndarray:
        return self.index.search(self._queries(queries), k,
                                 params=self.faiss.SearchParametersHNSW(efSearch=max(breadth, k)))[1]


class FaissIvf:
    """faiss IndexIVFFlat over norm-augmented vectors (L2), `lists_per_sqrt` * sqrt(N) k-means lists."""

    breadths = NPROBES

    def __init__(self, items: np.ndarray, lists_per_sqrt: int, seed: int) -> None:
        import faiss
        self.faiss = faiss
        data = augment(items, float(np.linalg.norm(items, axis=1).max()))
        nlist = int(lists_per_sqrt * np.sqrt(len(items)))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], nlist, faiss.METRIC_L2)
        self.index.cp.niter, self.index.cp.seed = 10, seed
        sample = np.random.default_rng(seed).choice(len(data), min(len(data), 40 * nlist), replace=False)
        self.index.train(data[np.sort(sample)])
        self.index.add(data)
        self.nlist = nlist

    def search(self, k: int, breadth: int):
        params = self.faiss.SearchParametersIVF(nprobe=breadth)
        pad = np.zeros((1, 1), np.float32)
        return lambda q: self.index.search(np.hstack([q[None], pad]), k, params=params)[1][0]

    def batch(self, queries: np.ndarray, k: int, breadth: int) -> np.ndarray:
        padded = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
        return self.index.search(padded, k, params=self.faiss.SearchParametersIVF(nprobe=breadth))[1]


class FaissIvfIp(FaissIvf):
    """faiss IndexIVFFlat by inner product over the raw vectors (no augmentation)."""

    def __init__(self, items: np.ndarray, lists_per_sqrt: int, seed: int) -> None:
        import faiss
        self.faiss = faiss
        nlist = int(lists_per_sqrt * np.sqrt(len(items)))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(items.shape[1]), items.shape[1], nlist,
                                        faiss.METRIC_INNER_PRODUCT)
        self.index.cp.niter, self.index.cp.seed = 10, seed
        sample = np.random.default_rng(seed).choice(len(items), min(len(items), 40 * nlist), replace=False)
        self.index.train(items[np.sort(sample)])
        self.index.add(items)
        self.nlist = nlist

    def search(self, k: int, breadth: int):
        params = self.faiss.SearchParametersIVF(nprobe=breadth)
        return lambda q: self.index.search(q[None], k, params=params)[1][0]

    def batch(self, queries: np.ndarray, k: int, breadth: int) -> np.ndarray:
        return self.index.search(queries, k, params=self.faiss.SearchParametersIVF(nprobe=breadth))[1]


class Hnswlib:
    breadths = EFS

    def __init__(self, items: np.ndarray, m: int, ef_construction: int) -> None:
        import hnswlib
        self.index = hnswlib.Index(space="ip", dim=items.shape[1])
        self.index.init_index(max_elements=len(items), ef_construction=ef_construction, M=m)
        self.index.add_items(items, np.arange(len(items)), num_threads=os.cpu_count() or 1)

    def search(self, k: int, breadth: int):
        self.index.set_ef(max(breadth, k))
        self.index.set_num_threads(1)
        return lambda q: self.index.knn_query(q, k)[0][0]

    def batch(self, queries: np.ndarray, k: int, breadth: int) -> np.ndarray:
        self.index.set_ef(max(breadth, k))
        self.index.set_num_threads(os.cpu_count() or 1)
        return self.index.knn_query(queries, k)[0]


class Usearch:
    breadths = EFS

    def __init__(self, items: np.ndarray, m: int, ef_construction: int) -> None:
        from usearch.index import Index
        self.index = Index(ndim=items.shape[1], metric="ip", dtype="f32", connectivity=m,
                           expansion_add=ef_construction)
        self.index.add(np.arange(len(items)), items, threads=os.cpu_count() or 1)

    def search(self, k: int, breadth: int):
        self.index.expansion_search = max(breadth, k)
        return lambda q: self.index.search(q, k, threads=1).keys

    def batch(self, queries: np.ndarray, k: int, breadth: int) -> np.ndarray:
        self.index.expansion_search = max(breadth, k)
        return self.index.search(queries, k, threads=os.cpu_count() or 1).keys


def make_index(spec: str, items: np.ndarray, args: argparse.Namespace):
    """`faiss-hnsw-ip:M`, `faiss-hnsw-l2:M`, `hnswlib:M`, `usearch:M` (M links), `faiss-ivf-l2:C`, `faiss-ivf-ip:C`
    (C*sqrt(N) lists; ip: by inner product over the raw vectors)."""
    name, _, param = spec.partition(":")
    value = int(param) if param else None
    if name in ("faiss-ivf-l2", "faiss-ivf-ip"):
        return (FaissIvf if name.endswith("l2") else FaissIvfIp)(items, value or 4, args.seed)
    m = value or 16
    if name in ("faiss-hnsw-ip", "faiss-hnsw-l2"):
        return FaissHnsw(items, m, args.ef_construction, l2=name.endswith("l2"))
    return {"hnswlib": Hnswlib, "usearch": Usearch}[name](items, m, args.ef_construction)


def model_vectors(bundle_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(items, D) catalog vectors and (users, D) states of a trained bundle, as the service computes
    them; cached under bench/work/ann/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"vectors-{bundle_dir.resolve().as_posix().replace('/', '_')[-80:]}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["items"], saved["states"]
    from components.serving.bundle import load_bundle
    from components.serving.recommender import BundleRecommender
    rec = BundleRecommender(load_bundle(bundle_dir), version="bench").prepare(load_encoder=False)
    items, states = rec.vectors.astype(np.float32), rec.states.astype(np.float32)
    np.savez(cache, items=items, states=states)
    return items, states


def mixture_catalog(trained: np.ndarray, n: int, components: int, seed: int) -> tuple[np.ndarray, dict]:
    """`n` items drawn from a Gaussian mixture fitted to a trained catalog's vectors, and how it fits."""
    from sklearn.mixture import GaussianMixture
    start = time.perf_counter()
    # reg_covar: about 1% of a coordinate's variance in trained catalogs (std ~0.03), so that small
    # components keep full-rank covariances without flattening their shape.
    gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-5, random_state=seed).fit(trained)
    gmm.random_state = seed  # sample() reads it: the same catalog for the same seed
    items = gmm.sample(n)[0].astype(np.float32)
    items = items[np.random.default_rng(seed).permutation(n)]  # sample() groups rows by component
    norms = lambda v: np.percentile(np.linalg.norm(v, axis=1), [5, 50, 95]).round(3).tolist()  # noqa: E731
    return items, {"components": components, "covariance": "full", "reg_covar": 1e-5, "converged": bool(gmm.converged_),
                   "fit_s": round(time.perf_counter() - start, 2), "trained_items": len(trained),
                   "norm_p5_p50_p95_trained": norms(trained), "norm_p5_p50_p95_drawn": norms(items)}


def vectors_for(n: int, args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    if args.vectors == "random":
        return (rng.standard_normal((n, args.dim), dtype=np.float32),
                rng.standard_normal((args.queries, args.dim), dtype=np.float32), {"kind": "random standard normal"})
    trained, states = model_vectors(args.bundle)
    items, how = mixture_catalog(trained, n, args.components, args.seed)
    return items, states[rng.permutation(len(states))], {"kind": "Gaussian mixture of a trained catalog + real "
                                                                 "user states", "users": len(states), **how}


def run_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    items, queries, how = vectors_for(n, args, rng)
    timed_queries = queries[:args.repeats]
    truth = exact_top(items, queries, args.k)
    exact = timed(lambda q: torch.topk(torch.from_numpy(items @ q), args.k).indices.numpy(), timed_queries)
    row = {"items": n, "dim": items.shape[1], "queries": len(queries), "k": args.k, "vectors": how,
           "exact": exact, "indexes": []}
    print(f"{n:,} items ({args.vectors}): exact p50 {exact['p50_ms']} ms", flush=True)
    for spec in args.indexes:
        rss = psutil.Process().memory_info().rss
        start = time.perf_counter()
        index = make_index(spec, items, args)
        build = time.perf_counter() - start
        grown = (psutil.Process().memory_info().rss - rss) / 2**20
        result = {"index": spec, "build_s": round(build, 2), "rss_growth_mib": round(grown, 1), "sweep": []}
        for breadth in index.breadths:
            found = index.batch(queries, args.k, breadth)
            point = {"breadth": breadth, "recall": round(recall(found, truth), 4),
                     **timed(index.search(args.k, breadth), timed_queries)}
            result["sweep"].append(point)
            print(f"  {spec}: build {build:.1f} s, breadth {breadth}: recall {point['recall']}, "
                  f"p50 {point['p50_ms']} ms", flush=True)
            if point["recall"] >= args.target or point["p50_ms"] > exact["p50_ms"]:
                break
        row["indexes"].append(result)
        del index
    if args.recloop:
        row["recloop_ann"] = recloop_index(items, queries, truth, args)
    return row


def recloop_index(items: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace) -> dict:
    """AnnIndex as the service builds it: calibrated on the first `--calibration` queries, measured on the rest."""
    calibrate, held_out = queries[:args.calibration], slice(args.calibration, None)
    start = time.perf_counter()
    index = AnnIndex.build(items, calibrate, min_recall=args.target, k=args.k)
    build = time.perf_counter() - start
    found = index.search(queries[held_out], args.k)[0]
    latency = timed(lambda q: index.search(q, args.k), queries[held_out][:args.repeats])
    out = {"build_s_with_calibration": round(build, 2), "kind": index.describe(), "calibrated_recall": index.recall,
           "recall_held_out": round(recall(found, truth[held_out]), 4), "held_out_queries": len(found), **latency}
    print(f"  components.serving.ann: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--vectors", choices=("random", "model"), default="random")
    parser.add_argument("--bundle", type=Path, help="a trained model's bundle (--vectors model)")
    parser.add_argument("--components", type=int, default=32, help="Gaussian mixture components (--vectors model)")
    parser.add_argument("--indexes", nargs="*", default=["faiss-hnsw-ip:16", "faiss-hnsw-l2:32", "faiss-ivf-l2:4"],
                        help="name:param, name one of faiss-hnsw-ip, faiss-hnsw-l2, hnswlib, usearch (param: M) "
                             "or faiss-ivf-l2, faiss-ivf-ip (param: lists per sqrt(N))")
    parser.add_argument("--no-recloop", dest="recloop", action="store_false", help="skip AnnIndex")
    parser.add_argument("--dim", type=int, default=64, help="random vectors' width (the model's dim)")
    parser.add_argument("--queries", type=int, default=500, help="random queries")
    parser.add_argument("--calibration", type=int, default=200, help="queries AnnIndex calibrates on")
    parser.add_argument("--repeats", type=int, default=300, help="queries timed one by one")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.98, help="recall@k to reach")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.vectors == "model" and args.bundle is None:
        parser.error("--vectors model needs --bundle")
    start, load = time.perf_counter(), os.getloadavg()
    rng = np.random.default_rng(args.seed)
    rows = [run_size(n, args, rng) for n in args.sizes]
    now = datetime.now(timezone.utc)
    out = {"date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "command": "python bench/ann.py " + " ".join(sys.argv[1:]),
           **provenance(), "vectors": args.vectors, "score": "inner product",
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
           "versions": _versions(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                 for k, v in vars(args).items() if k != "sizes"},
           "load_average_start": load, "load_average_end": os.getloadavg(),
           "wall_seconds": round(time.perf_counter() - start, 1), "sizes": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ann-{now.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(path)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for package in ("faiss-cpu", "usearch", "hnswlib", "numpy", "torch", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


if __name__ == "__main__":
    main()
