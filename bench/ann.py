"""Approximate nearest-neighbour retrieval for big catalogs: faiss, usearch and hnswlib side by side.

The vectors are RANDOM (standard normal items and queries, float32, `--dim` wide): this measures the
indexes' speed and their recall against exact scoring, not a model's quality. The score is the inner
product, as the recommender's (item vectors @ user state). For each catalog size and library: build
time (all cores), then for each `ef` (the HNSW search breadth) recall@k over `--queries` queries
against the exact top k, and the latency of one query at a time on one thread (the service's request
path), p50/p99, next to exact scoring's (numpy matmul + torch.topk, what the recommender does now).
Also the winner as the library builds it (components/serving/ann.py), at its chosen ef.

    python bench/ann.py --sizes 100000 1000000
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
from components.serving.ann import AnnIndex  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ann"
EFS = (64, 128, 256, 512, 1024)


def exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) exact best rows by inner product."""
    out = []
    for chunk in np.array_split(queries, max(1, len(queries) // 64)):
        out.append(torch.topk(torch.from_numpy(chunk @ items.T), k, dim=1).indices.numpy())
    return np.concatenate(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def timed(search, queries: np.ndarray, repeats: int) -> tuple[np.ndarray, dict]:
    """Each query alone, one thread: the results and the latency percentiles (ms)."""
    found, times = [], []
    with threadpool_limits(1):
        torch.set_num_threads(1)
        for q in queries[:repeats]:
            start = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - start) * 1e3)
        found = [search(q) for q in queries]
        torch.set_num_threads(os.cpu_count() or 1)
    times = np.array(times)
    return np.array(found), {"p50_ms": round(float(np.percentile(times, 50)), 3),
                             "p99_ms": round(float(np.percentile(times, 99)), 3),
                             "mean_ms": round(float(times.mean()), 3)}


class Faiss:
    name = "faiss-cpu"

    def __init__(self, items: np.ndarray, m: int, ef_construction: int) -> None:
        import faiss
        self.index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(items)
        self.faiss = faiss

    def search(self, k: int, ef: int):
        params = self.faiss.SearchParametersHNSW(efSearch=ef)
        self.faiss.omp_set_num_threads(1)
        return lambda q: self.index.search(q[None], k, params=params)[1][0]


class Usearch:
    name = "usearch"

    def __init__(self, items: np.ndarray, m: int, ef_construction: int) -> None:
        from usearch.index import Index
        self.index = Index(ndim=items.shape[1], metric="ip", dtype="f32", connectivity=m,
                           expansion_add=ef_construction)
        self.index.add(np.arange(len(items)), items, threads=os.cpu_count() or 1)

    def search(self, k: int, ef: int):
        self.index.expansion_search = ef
        return lambda q: self.index.search(q, k, threads=1).keys


class Hnswlib:
    name = "hnswlib"

    def __init__(self, items: np.ndarray, m: int, ef_construction: int) -> None:
        import hnswlib
        self.index = hnswlib.Index(space="ip", dim=items.shape[1])
        self.index.init_index(max_elements=len(items), ef_construction=ef_construction, M=m)
        self.index.add_items(items, np.arange(len(items)), num_threads=os.cpu_count() or 1)

    def search(self, k: int, ef: int):
        self.index.set_ef(max(ef, k))
        self.index.set_num_threads(1)
        return lambda q: self.index.knn_query(q, k)[0][0]


LIBRARIES = {"faiss": Faiss, "usearch": Usearch, "hnswlib": Hnswlib}


def run_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    items = rng.standard_normal((n, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    truth = exact_top(items, queries, args.k)
    _, exact = timed(lambda q: torch.topk(torch.from_numpy(items @ q), args.k).indices.numpy(), queries,
                     args.repeats)
    row = {"items": n, "dim": args.dim, "queries": args.queries, "k": args.k, "exact": exact, "libraries": []}
    print(f"{n:,} items: exact p50 {exact['p50_ms']} ms", flush=True)
    for name in args.libs:
        rss = psutil.Process().memory_info().rss
        start = time.perf_counter()
        lib = LIBRARIES[name](items, args.m, args.ef_construction)
        build = time.perf_counter() - start
        grown = (psutil.Process().memory_info().rss - rss) / 2**20
        result = {"library": lib.name, "build_s": round(build, 2), "rss_growth_mib": round(grown, 1), "ef": []}
        for ef in EFS:
            found, latency = timed(lib.search(args.k, ef), queries, args.repeats)
            result["ef"].append({"ef": ef, "recall": round(recall(found, truth), 4), **latency})
            print(f"  {lib.name}: build {build:.1f} s, ef {ef}: recall {result['ef'][-1]['recall']}, "
                  f"p50 {latency['p50_ms']} ms", flush=True)
            if result["ef"][-1]["recall"] >= args.target:
                break
        row["libraries"].append(result)
        del lib
    start = time.perf_counter()
    index = AnnIndex.build(items, min_recall=args.target)
    build = time.perf_counter() - start
    found, latency = timed(lambda q: index.search(q, args.k)[0], queries, args.repeats)
    row["recloop_ann"] = {"build_s": round(build, 2), "ef": index.ef, "recall": round(recall(found, truth), 4),
                          **latency}
    print(f"  components.serving.ann: build {build:.1f} s, ef {index.ef}: recall {row['recloop_ann']['recall']}, "
          f"p50 {latency['p50_ms']} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--libs", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    parser.add_argument("--dim", type=int, default=64, help="the model's width (params.yaml model.dim)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=300, help="queries timed one by one")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.98, help="recall@k to reach")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start, load = time.perf_counter(), os.getloadavg()
    rng = np.random.default_rng(args.seed)
    rows = [run_size(n, args, rng) for n in args.sizes]
    now = datetime.now(timezone.utc)
    out = {"date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "command": "python bench/ann.py " + " ".join(sys.argv[1:]),
           **provenance(), "vectors": "random standard normal (items and queries), float32; inner product",
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
           "versions": _versions(), "settings": {k: v for k, v in vars(args).items() if k != "sizes"},
           "load_average_start": load, "load_average_end": os.getloadavg(),
           "wall_seconds": round(time.perf_counter() - start, 1), "sizes": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ann-{now.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(path)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for package in ("faiss-cpu", "usearch", "hnswlib", "numpy", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


if __name__ == "__main__":
    main()
