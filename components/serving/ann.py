"""Approximate nearest-neighbour retrieval for big catalogs: an HNSW graph over the item vectors.

Scoring every item is one (N, D) @ (D,) product per request: about 1 ms at 100k items, 10+ ms at
1M on one core. Above `serve.ann_above` items the recommender asks this index for its candidates
instead. The score is the inner product, as in exact scoring; the index returns the exact scores
of the items it finds, best first, so only recall can differ from exact scoring, never the order.

Library: faiss-cpu's IndexHNSWFlat, chosen over usearch and hnswlib by bench/ann.py (docs/benchmarks.md:
recall, latency and build time at 100k and 1M items). `build` sets the search breadth `ef` by
measurement: the smallest of EFS whose recall@k against exact scoring reaches `min_recall` on
calibration queries (the model's own user states where the recommender has them); when none does
(vectors without structure: isotropic random ones at 1M items), `for_catalog` keeps exact scoring.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)
# Search breadths tried, smallest first (HNSW's ef: more is slower and finds more).
EFS = (64, 128, 256, 512, 1024, 2048)


class Best(NamedTuple):
    """As torch.topk answers: (B, n) scores and rows, best first."""

    values: torch.Tensor
    indices: torch.Tensor


@dataclass
class AnnIndex:
    """An HNSW index over (N, D) float32 item vectors, searched by inner product."""

    index: faiss.IndexHNSWFlat
    vectors: np.ndarray  # (N, D) the indexed vectors (a reference, not a copy): the fallback's exact scores
    ef: int
    recall: float  # recall@k at `ef` on the calibration queries
    k: int  # the k that `ef` was calibrated for

    @classmethod
    def build(cls, vectors: np.ndarray, queries: np.ndarray | None = None, min_recall: float = 0.98, k: int = 100,
              m: int = 16, ef_construction: int = 128, calibration: int = 200, seed: int = 0) -> AnnIndex:
        """Index `vectors`; choose ef with `calibration` of `queries` (default: random normal vectors)."""
        import faiss  # only big catalogs need it (serving imports this module for every catalog)

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        rng = np.random.default_rng(seed)
        if queries is None or not len(queries):
            queries = rng.standard_normal((calibration, dim), dtype=np.float32)
        elif len(queries) > calibration:
            queries = queries[rng.choice(len(queries), calibration, replace=False)]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, n)
        # Exact answers a few queries at a time: 200 x 1M scores at once would take 800 MB.
        truth = np.concatenate([torch.topk(torch.from_numpy(chunk @ vectors.T), k, dim=1).indices.numpy()
                                for chunk in np.array_split(queries, max(1, len(queries) // 16))])
        built = cls(index, vectors, EFS[-1], 0.0, k)
        for ef in EFS:
            built.ef = ef
            found = built.search(queries, k)[0]
            built.recall = float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))
            if built.recall >= min_recall:
                break
        return built

    @classmethod
    def for_catalog(cls, vectors: np.ndarray, queries: np.ndarray, above: int | None,
                    min_recall: float = 0.98) -> AnnIndex | None:
        """The index for a catalog larger than `above` items, or None (exact scoring): also when no ef
        reaches `min_recall` on `queries` (vectors without structure; a warning says so)."""
        if above is None or len(vectors) <= above:
            return None
        index = cls.build(vectors, queries, min_recall=min_recall)
        if index.recall < min_recall:
            log.warning("ANN index: recall@%d %.3f < %.2f even at ef %d; scoring all %d items exactly",
                        index.k, index.recall, min_recall, index.ef, len(vectors))
            return None
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and inner-product scores of the k best items found, best first: (k,) each for one (D,)
        query, (B, k) for (B, D) (k at most the catalog's size)."""
        import faiss

        single = queries.ndim == 1
        batch = np.ascontiguousarray(queries[None] if single else queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        scores, rows = self.index.search(batch, k, params=faiss.SearchParametersHNSW(efSearch=max(self.ef, k)))
        short = (rows < 0).any(axis=1)  # the graph walk found fewer than k: rare; score those exactly
        if short.any():
            exact = torch.topk(torch.from_numpy(batch[short] @ self.vectors.T), k, dim=1)
            rows[short], scores[short] = exact.indices.numpy(), exact.values.numpy()
        return (rows[0], scores[0]) if single else (rows, scores)

    def topk(self, states: torch.Tensor, n: int) -> Best:
        """`torch.topk(states @ vectors.T, n, dim=1)` through the index, for (B, D) states."""
        rows, scores = self.search(states.numpy(), n)
        return Best(torch.from_numpy(scores), torch.from_numpy(rows))

    def scores(self, query: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
        """(N,) scores for one (D,) query, for picking its top k among `allowed` items: the exact score of
        the best max(k, calibrated k) items the index finds, -inf for the rest; the exact scores of all
        items when fewer than k of the found ones are allowed (strict filters, or items already seen)."""
        rows, found = self.search(query, max(k, self.k))
        if np.count_nonzero(allowed[rows]) < min(k, int(np.count_nonzero(allowed))):
            return self.vectors @ query
        dense = np.full(len(self.vectors), -np.inf, dtype=np.float32)
        dense[rows] = found
        return dense
