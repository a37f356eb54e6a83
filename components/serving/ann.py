"""Approximate nearest-neighbour retrieval for big catalogs: an inverted-file index over the item vectors.

Scoring every item is one (N, D) @ (D,) product per request: about 2 ms at 200k items, 10-11 ms
at 1M on one core. Above `serve.ann_above` items the recommender asks this index for its candidates
instead. The score is the inner product, as in exact scoring; the index returns the exact scores
of the items it finds, best first, so only recall can differ from exact scoring, never the order.

Index: faiss-cpu's IndexIVFFlat (k-means lists, each scanned exactly) over norm-augmented vectors,
which turns maximum inner product search into nearest-neighbour search by L2 (`augment`). Chosen by
bench/ann.py (docs/benchmarks.md) on realistic vectors at 1M items (a Gaussian mixture fitted to a
trained model's catalog, queried by its users' states): an HNSW graph searched by inner product
stalls at recall@100 0.33 (item norms vary, and inner product is no metric to walk a graph by); over
augmented vectors HNSW (M=32) reaches 0.985 at 0.12 ms and IVF 0.99 at 0.09 ms, built in 11 s
instead of 171 s and in less memory.

`build` sets the number of lists scanned, `nprobe`, by measurement: the smallest of NPROBES whose
recall@k against exact scoring reaches `min_recall` on calibration queries (the model's own user
states where the recommender has them); when none up to an eighth of the lists (or 50 k items'
worth, in small catalogs) does, as on vectors without structure (isotropic random ones),
`for_catalog` keeps exact scoring.
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
# Lists scanned per query, tried smallest first (more is slower and finds more); at most an eighth
# of the lists, beyond which the index saves too little over scanning every item ...
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MAX_SCANNED = 1 / 8
SMALL_SCAN = 50  # ... or 50 * k items where that is more (5,000 at k 100: a tenth of a millisecond)
LISTS_PER_SQRT = 4  # lists = 4 sqrt(N): faiss's usual range is 4-16 sqrt(N); fewer lists train faster
TRAIN_PER_LIST = 40  # k-means sample: 40 items a list (faiss asks for at least 39)


def augment(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """(N, D+1) vectors of equal norm `max_norm` (at least each row's): the extra coordinate
    sqrt(max_norm^2 - |x|^2) turns maximum inner product with a query (q, 0) into the nearest by L2."""
    extra = np.sqrt(np.maximum(max_norm**2 - np.einsum("nd,nd->n", vectors, vectors), 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


class Best(NamedTuple):
    """As torch.topk answers: (B, n) scores and rows, best first."""

    values: torch.Tensor
    indices: torch.Tensor


@dataclass
class AnnIndex:
    """An IVF-Flat index over norm-augmented (N, D+1) item vectors: inner-product search as L2 search."""

    index: faiss.IndexIVFFlat
    vectors: np.ndarray  # (N, D) the indexed vectors (a reference, not a copy): exact scores and the fallback
    nprobe: int
    recall: float  # recall@k at `nprobe` on the calibration queries
    k: int  # the k that `nprobe` was calibrated for

    @classmethod
    def build(cls, vectors: np.ndarray, queries: np.ndarray | None = None, min_recall: float = 0.98, k: int = 100,
              calibration: int = 200, seed: int = 0) -> AnnIndex:
        """Index `vectors`; choose nprobe with `calibration` of `queries` (default: random normal vectors)."""
        import faiss  # only big catalogs need it (serving imports this module for every catalog)

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        data = augment(vectors, float(np.linalg.norm(vectors, axis=1).max()))
        lists = max(1, min(int(LISTS_PER_SQRT * np.sqrt(n)), n // TRAIN_PER_LIST))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, lists, faiss.METRIC_L2)
        index.cp.niter, index.cp.seed = 10, seed  # 10 k-means rounds: lists need balance, not optimality
        rng = np.random.default_rng(seed)
        index.train(data[np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * lists), replace=False))])
        index.add(data)
        del data  # the index holds its own copy
        if queries is None or not len(queries):
            queries = rng.standard_normal((calibration, dim), dtype=np.float32)
        elif len(queries) > calibration:
            queries = queries[rng.choice(len(queries), calibration, replace=False)]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, n)
        # Exact answers a few queries at a time: 200 x 1M scores at once would take 800 MB.
        truth = np.concatenate([torch.topk(torch.from_numpy(chunk @ vectors.T), k, dim=1).indices.numpy()
                                for chunk in np.array_split(queries, max(1, len(queries) // 16))])
        built = cls(index, vectors, 1, 0.0, k)
        # Scanning up to max(N/8, 50 * k) items: in small catalogs a 50 * k items' scan costs next to nothing.
        limit = min(lists, max(1, int(lists * max(MAX_SCANNED, SMALL_SCAN * k / n))))
        for nprobe in sorted({p for p in NPROBES if p < limit} | {limit}):
            built.nprobe = nprobe
            found = built.candidates(queries, k)  # the index's own answers: a short one's -1 rows count as misses
            built.recall = float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))
            if built.recall >= min_recall:
                break
        return built

    @classmethod
    def for_catalog(cls, vectors: np.ndarray, queries: np.ndarray, above: int | None,
                    min_recall: float = 0.98) -> AnnIndex | None:
        """The index for a catalog larger than `above` items, or None (exact scoring): also when no nprobe
        reaches `min_recall` on `queries` (vectors without structure; a warning says so)."""
        if above is None or len(vectors) <= above:
            return None
        index = cls.build(vectors, queries, min_recall=min_recall)
        if index.recall < min_recall:
            log.warning("ANN index: recall@%d %.3f < %.2f even scanning %d of %d lists; scoring all %d items exactly",
                        index.k, index.recall, min_recall, index.nprobe, index.index.nlist, len(vectors))
            return None
        return index

    def describe(self) -> str:
        return (f"faiss IVF-Flat over norm-augmented vectors (L2), {self.index.nlist} lists, nprobe {self.nprobe}, "
                f"calibrated recall@{self.k} {self.recall:.4f}")

    def candidates(self, batch: np.ndarray, k: int) -> np.ndarray:
        """(B, k) rows the index finds for (B, D) queries, nearest first by L2; -1 where the scanned lists
        held fewer than k items."""
        import faiss

        padded = np.hstack([batch, np.zeros((len(batch), 1), np.float32)])  # (B, D+1): the query is (q, 0)
        return self.index.search(padded, k, params=faiss.SearchParametersIVF(nprobe=self.nprobe))[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and inner-product scores of the k best items found, best first: (k,) each for one (D,)
        query, (B, k) for (B, D) (k at most the catalog's size)."""
        single = queries.ndim == 1
        batch = np.ascontiguousarray(queries[None] if single else queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        rows = self.candidates(batch, k)
        short = (rows < 0).any(axis=1)  # the scanned lists held fewer than k items: score those exactly
        if short.any():
            rows[short] = torch.topk(torch.from_numpy(batch[short] @ self.vectors.T), k, dim=1).indices.numpy()
        # The index ranks by L2 distance; report the inner products themselves, best first.
        scores = np.einsum("bkd,bd->bk", self.vectors[rows], batch)
        order = np.argsort(-scores, axis=1, kind="stable")
        rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
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
