"""Entity embeddings of a validated knowledge graph, pretrained with PyKEEN, as a per-item vector table.

`recloop kg-embed` trains a knowledge-graph-embedding model (TransE by default, RotatE as the
option; `kg_embed` in params) on the triples `recloop kg` validated (paths.kg), then gives each
linked item its entity's embedding and writes them as Parquet (`item_id`, `vector`), the format
`model.sources.vectors` reads (components/features/vectors.py). Items the graph does not link get
no row, so the item tower treats them as lacking the source. Unlike the `kg` source, whose entity
embeddings the recommender learns, these are learned from the graph alone, before and apart from
the recommendation loss: a second, fixed modality through the extra-vector door.
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import KGEmbedConfig
from components.errors import RecloopError
from components.features.kg import read_kg_tables


@dataclass
class EntityEmbeddings:
    """Each entity's learned vector (complex ones as real and imaginary parts side by side)."""

    entities: list[str]
    vectors: np.ndarray  # (E, width) float32
    losses: list[float]  # per epoch


@dataclass
class KGEmbedSummary:
    out: Path
    model: str
    width: int
    items: int
    entities: int
    triples: int
    final_loss: float
    seconds: float

    def describe(self) -> str:
        return (f"{self.model}: {self.triples} triples, {self.entities} entities, final loss {self.final_loss:.4f} "
                f"in {self.seconds:.0f} s; wrote {self.items} linked items' {self.width}-d vectors to {self.out}")


@contextmanager
def _quiet_pykeen() -> Iterator[None]:
    """PyKEEN logs its device choice, seeds and batch handling at INFO/WARNING, and its data loader warns that a
    CPU cannot pin memory; keep only errors meanwhile."""
    log = logging.getLogger("pykeen")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            yield
    finally:
        log.setLevel(level)


def train_entity_embeddings(triples: pd.DataFrame, cfg: KGEmbedConfig, seed: int,
                            progress: bool = True) -> EntityEmbeddings:
    """Train `cfg.model` on (head, relation, tail) string triples on the CPU; the seed fixes the result."""
    import torch
    from pykeen.models import RotatE, TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    if triples.empty:
        raise RecloopError("the knowledge graph has no triples to embed: run `recloop kg` on a graph with facts")
    labelled = triples[["head", "relation", "tail"]].astype(str).to_numpy()
    with _quiet_pykeen(), tempfile.TemporaryDirectory() as checkpoints:
        factory = TriplesFactory.from_labeled_triples(labelled)  # ids follow the sorted labels: seed-stable
        torch.manual_seed(seed)  # the data loader's shuffle and the negative sampler draw from torch's generator
        kind = {"TransE": TransE, "RotatE": RotatE}[cfg.model]
        model = kind(triples_factory=factory, embedding_dim=cfg.dim, random_seed=seed).to("cpu")
        loop = SLCWATrainingLoop(model=model, triples_factory=factory, optimizer="adam",
                                 optimizer_kwargs={"lr": cfg.lr},
                                 negative_sampler_kwargs={"num_negs_per_pos": cfg.negatives})
        # PyKEEN always makes a checkpoint folder (under ~/.data/pykeen unless told): a temporary one.
        losses = loop.train(triples_factory=factory, num_epochs=cfg.epochs, batch_size=cfg.batch_size,
                            use_tqdm=progress, use_tqdm_batch=False, checkpoint_directory=checkpoints,
                            tqdm_kwargs={"desc": f"kg-embed {cfg.model}", "leave": False})
        table = model.entity_representations[0](indices=None).detach()  # (E, dim), complex for RotatE
    if table.is_complex():
        table = torch.view_as_real(table).flatten(1)  # (E, 2 * dim)
    by_id = sorted(factory.entity_to_id.items(), key=lambda kv: kv[1])
    return EntityEmbeddings([label for label, _ in by_id], table.numpy().astype(np.float32), list(losses or []))


def item_vectors(links: pd.DataFrame, embeddings: EntityEmbeddings) -> pd.DataFrame:
    """(item_id, vector) for every linked item whose entity has an embedding, in the links' order."""
    rows = pd.Index(embeddings.entities).get_indexer(links["entity"].astype(str))
    found = rows >= 0
    return pd.DataFrame({"item_id": links["item_id"].astype(str).to_numpy()[found],
                         "vector": list(embeddings.vectors[rows[found]])})


def kg_embed(cfg: KGEmbedConfig, kg_dir: Path, out: Path, seed: int, progress: bool = True) -> KGEmbedSummary:
    """Embed the validated graph in `kg_dir` (paths.kg) and write its linked items' vectors to `out` (Parquet)."""
    triples, links = read_kg_tables(kg_dir)
    began = time.perf_counter()
    embeddings = train_entity_embeddings(triples, cfg, seed, progress)
    table = item_vectors(links, embeddings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    return KGEmbedSummary(out, cfg.model, embeddings.vectors.shape[1], len(table), len(embeddings.entities),
                          len(triples), embeddings.losses[-1] if embeddings.losses else float("nan"),
                          time.perf_counter() - began)
