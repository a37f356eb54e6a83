"""Training-step benchmark: ms per step, GFLOP/s against the machine's peak, and peak memory.

One step is what the training loop does per batch in pretraining: the real `Recloop` model's forward
with the pretrain objective (full-softmax next-item retrieval + 0.1 x ID/text InfoNCE), backward,
gradient clipping and an AdamW step, with the thread and determinism settings of `configure_torch`.
The inputs are synthetic, at the real shapes: a batch of 128 sequences x 50 positions, every position
supervised (M = 6,400, the full batch of a long-history dataset such as MovieLens), catalogs of the
sizes below, item ids drawn Zipf-like (popularity skew sets how many distinct targets InfoNCE sees).

Variants, measured in the same run, alternating (A B, then B A), each (variant, shape, threads) in a
fresh process so that its peak RSS is its own:
  plain    the model file of commit 4511575 (loaded from git): F.cross_entropy(h @ table.T, target)
           with the (M, N) logits materialised, and the (K, K) InfoNCE logits likewise;
  chunked  the model of this tree, whose losses go through components.models.softmax (chunked, fused).
  bf16     chunked with `pretrain.softmax_precision=bfloat16`: the loss's three products in bfloat16,
           no longer exact (gradients ~1e-3 off); opt-in, and only a gain on CPUs with AVX512_BF16/AMX.
Both start from the same weights and the same random state. Until session 17 they drew the same dropout
masks and their losses agreed to rounding; this tree cuts its CPU masks from 64-bit words
(components/models/dropout.py), so the losses now agree in distribution and `max_loss_difference` is
dropout noise. The softmax's exactness is tested in tests/models/test_softmax.py.

    flock /tmp/cpu.lock .venv/bin/python bench/step.py
    flock /tmp/cpu.lock .venv/bin/python bench/step.py --shapes ml-latest-small --threads 2,1 --rounds 3
    flock /tmp/cpu.lock .venv/bin/python bench/step.py --variants plain,chunked,bf16   # and the bfloat16 products
    flock /tmp/cpu.lock .venv/bin/python bench/step.py --shapes ml-latest-small --variants chunked \
        --chunks 262144,1048576,2097152,4194304,8388608      # chunk-size sweep

One JSON per run goes to bench/results/step/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provenance import provenance  # noqa: E402

BASELINE = "4511575"
BATCH, POSITIONS = 128, 50
# Attribute vocabulary and attributes per item of the synthetic catalog (categories, brand, genres).
ATTRIBUTES, ITEM_ATTRIBUTES = 1000, 4
ZIPF = 1.0


@dataclass(frozen=True)
class Shape:
    items: int
    source: str


# Catalog sizes of the datasets recloop is benchmarked on (items after the split).
SHAPES = {
    "ml-latest-small": Shape(9691, "the embedded data/raw/ml-latest-small"),
    "beauty": Shape(12101, "s3rec Beauty"),
    "sports": Shape(18357, "s3rec Sports_and_Outdoors"),
    "toys": Shape(11924, "s3rec Toys_and_Games"),
    "scientific": Shape(4385, "amazon2018-scientific-unisrec (UniSRec split)"),
}


def module_at(revision: str, path: str) -> types.ModuleType:
    """The module at `path` as of git `revision`, loaded from git beside this tree's."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType(f"{Path(path).stem}_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def baseline_module() -> types.ModuleType:
    """components/models/model.py as of BASELINE: the step this benchmark compares against."""
    return module_at(BASELINE, "components/models/model.py")


def as_baseline(model, baseline: types.ModuleType):
    """The baseline's Recloop with `model`'s weights (head modules renamed since are mapped by name)."""
    # Knobs added since (the encoder's) are left out: the baseline only knows attention.
    known = baseline.RecloopConfig.__dataclass_fields__

    class Baseline(baseline.Recloop):
        def forward(self, batch, targets=None, negatives=None, tasks=("retrieval",), temperature=0.07,
                    softmax_dtype=None):  # the loop's argument since: the baseline's products are float32
            return super().forward(batch, targets, negatives, tasks, temperature)

    old = Baseline(baseline.RecloopConfig(**{k: v for k, v in vars(model.config).items() if k in known}))
    new = model.state_dict()
    renames = {"like_head.": "task_heads.like.", "rating_head.": "task_heads.rating."}
    state = {}
    for key in old.state_dict():
        found = next((k for k in [key, *(key.replace(a, b) for a, b in renames.items() if key.startswith(a))]
                      if k in new), None)
        if found is None:
            raise SystemExit(f"no weight for the baseline's {key}")
        state[key] = new[found]
    old.load_state_dict(state)
    return old


def synthetic_batch(n_items: int, generator):
    """A (B, T) batch with every position real and supervised, items drawn Zipf-like over the catalog."""
    import torch

    from components.models.model import GAP_BUCKETS, HOURS, WEEKDAYS, SequenceBatch, Targets

    popularity = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64) ** ZIPF
    ranked = torch.randperm(n_items, generator=generator)
    draws = ranked[torch.multinomial(popularity, BATCH * (POSITIONS + 1), replacement=True, generator=generator)]
    sequence = draws.view(BATCH, POSITIONS + 1) + 1  # item_idx + 1

    def codes(high: int) -> torch.Tensor:
        return torch.randint(1, high, (BATCH, POSITIONS), generator=generator)

    batch = SequenceBatch(items=sequence[:, :-1].contiguous(), events=codes(2), values=codes(9),
                          gaps=codes(GAP_BUCKETS), hours=codes(HOURS), weekdays=codes(WEEKDAYS),
                          domains=torch.ones(BATCH, POSITIONS, dtype=torch.long),
                          profile=torch.zeros(BATCH, 0, dtype=torch.long),
                          lengths=torch.full((BATCH,), POSITIONS))
    nan = torch.full((BATCH, POSITIONS), float("nan"))
    return batch, Targets(items=sequence[:, 1:].contiguous(), likes=nan, ratings=nan.clone())


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: dict) -> dict:
    """One (shape, variant, threads, chunk) in this process: warm-up, timed steps, losses, memory."""
    import torch

    from components.config import load_params
    from components.models import softmax
    from components.models.model import Recloop
    from components.models.shape import RecloopConfig
    from components.training.loop import configure_torch, training_step
    from components.training.pretrain import objective

    narrow = ["pretrain.softmax_precision=bfloat16"] if case["variant"] == "bf16" else []
    params = load_params(REPO / "params.yaml", narrow)
    cfg, knobs = params.pretrain, params.model
    if case.get("chunk_elements"):
        softmax.CHUNK_ELEMENTS = case["chunk_elements"]
    configure_torch(case["threads"], params.seed)
    shared = set(RecloopConfig.__dataclass_fields__) & set(type(knobs).model_fields)
    config = RecloopConfig(n_items=case["items"], text_dim=384, n_attributes=ATTRIBUTES + 1, n_events=2,
                           n_value_buckets=9, n_domains=2, profile_sizes=[], rating_mean=0.0, rating_std=1.0,
                           kg_relations=[], n_entities=0, extra_sources={}, cosine=False,
                           **{k: getattr(knobs, k) for k in shared})
    model = Recloop(config)
    g = torch.Generator().manual_seed(params.seed)
    n = config.n_items
    text = torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=1)
    attributes = torch.zeros(n, config.max_item_attributes, dtype=torch.long)
    attributes[:, :ITEM_ATTRIBUTES] = torch.randint(1, ATTRIBUTES + 1, (n, ITEM_ATTRIBUTES), generator=g)
    model.tower.load_catalog(text, torch.ones(n, dtype=torch.bool), attributes, torch.ones(n, dtype=torch.bool))
    if case["variant"] == "plain":
        model = as_baseline(model, baseline_module())
    batch, targets = synthetic_batch(n, g)
    torch.manual_seed(params.seed)  # the same random state in both variants
    goal = objective(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()

    def step() -> float:
        # The training loop's own step, on a fixed batch.
        loss, _ = training_step(model, batch, targets, None, goal, optimizer, cfg.grad_clip)
        return float(loss.detach())

    rss_before = rss_mb()
    losses, seconds = [], []
    for i in range(case["warmup"] + case["steps"]):
        began = time.perf_counter()
        losses.append(step())
        if i >= case["warmup"]:
            seconds.append(time.perf_counter() - began)
    mask = targets.items > 0
    distinct = targets.items[mask].unique()
    return {**case, "model_module": type(model).__module__, "positions": int(mask.sum()), "dim": config.dim,
            "text_dim": config.text_dim, "text_hidden": config.text_hidden, "layers": config.layers,
            "contrastive_items": int(len(distinct)), "step_ms": [round(1000 * s, 2) for s in seconds],
            "median_ms": round(1000 * statistics.median(seconds), 2), "losses": losses,
            "rss_before_steps_mb": round(rss_before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def step_flops(r: dict) -> dict[str, float]:
    """Matrix-product FLOPs of one step (forward + backward; embeddings, norms, AdamW left out).

    A product of (a, b) by (b, c) costs 2abc forward and twice that backward (gradients of both
    factors); a product whose input needs no gradient (the frozen text vectors) costs 2abc backward.
    """
    m, n, d, t, hid = r["positions"], r["items"], r["dim"], r["text_dim"], r["text_hidden"]
    k, layers = r["contrastive_items"], r["layers"]
    tokens = BATCH * POSITIONS

    def tower(rows: int) -> float:  # text adapter: (rows, t) x (t, hid), then (rows, hid) x (hid, d)
        return 2 * rows * t * hid * 2 + 2 * rows * hid * d * 3

    return {
        "retrieval_logits": 3 * 2 * m * n * d,
        "item_tower_catalog": tower(n),
        # qkv 3D², proj D², MLP 8D² per token; attention scores and mixing 2 x 2 T D per token.
        "encoder": 3 * layers * (2 * tokens * 12 * d * d + 2 * 2 * tokens * POSITIONS * d),
        "contrastive": 3 * 2 * k * k * d + tower(k),
    }


def cpu_info() -> dict:
    """What /proc/cpuinfo and lscpu say, and the fp32 peak they imply."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    family = int(info.get("cpu family", "0"))
    cores = len(os.sched_getaffinity(0))
    mhz = float(info.get("cpu MHz", "0"))
    # fp32 FLOPs per cycle per core = FMA pipes x lanes x 2. AMD Zen 5 (family 26) has two full 512-bit
    # FMA pipes (16 lanes); Zen 3/4 (family 25) two 256-bit ones (Zen 4 runs AVX-512 as 2 x 256).
    lanes = 16 if family >= 26 and "avx512f" in flags else 8 if "fma" in flags else 4
    per_cycle = 2 * lanes * 2
    return {"model": info.get("model name", "unknown"), "vendor": info.get("vendor_id", ""), "family": family,
            "model_number": int(info.get("model", "0")), "cores": cores, "mhz": mhz,
            "avx2": "avx2" in flags, "fma": "fma" in flags, "avx512f": "avx512f" in flags,
            "flops_per_cycle_per_core": per_cycle,
            "peak_gflops": round(cores * mhz * 1e-3 * per_cycle, 1),
            "peak_derivation": f"{cores} cores x {mhz / 1000:.2f} GHz x 2 FMA pipes x {lanes} fp32 lanes x 2 "
                               f"FLOPs per FMA = {cores * mhz * 1e-3 * per_cycle:.0f} GFLOP/s"}


def measure_gemm(threads: int, dtype: str = "float32") -> float:
    """GFLOP/s of a 2048^3 matrix product in `dtype`: what torch's BLAS reaches on this machine.

    float32 is the step's arithmetic; bfloat16 (oneDNN, native where the CPU has AVX512_BF16) is what
    other arithmetic would reach, which the exact loss does not use.
    """
    import torch

    torch.set_num_threads(threads)
    kind = getattr(torch, dtype)
    a, b = torch.randn(2048, 2048, dtype=kind), torch.randn(2048, 2048, dtype=kind)
    out = torch.empty(2048, 2048, dtype=kind)
    times = []
    for _ in range(8):
        began = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - began)
    return 2 * 2048 ** 3 / statistics.median(times[2:]) / 1e9


def in_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> list[dict]:
    """Per (shape, threads, chunk): median over rounds of each variant, the speedup, the memory ratio."""
    table = []
    keys = sorted({(r["shape"], r["threads"]) for r in rows}, key=lambda k: (list(SHAPES).index(k[0]), -k[1]))
    for shape, threads in keys:
        group = [r for r in rows if r["shape"] == shape and r["threads"] == threads]
        by_variant: dict[tuple, list[dict]] = {}
        for r in group:
            by_variant.setdefault((r["variant"], r.get("chunk_elements")), []).append(r)
        entry = {"shape": shape, "items": group[0]["items"], "positions": group[0]["positions"],
                 "threads": threads, "gflop": round(group[0]["gflop"], 2), "variants": {}}
        for (variant, chunk), found in by_variant.items():
            name = variant if chunk is None else f"{variant}@{chunk}"
            ms = statistics.median(m for r in found for m in r["step_ms"])
            entry["variants"][name] = {
                "median_ms": round(ms, 1), "gflop_per_s": round(found[0]["gflop"] / ms * 1000, 1),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in found), 1),
                "step_peak_mb": round(max(r["peak_rss_mb"] - r["rss_before_steps_mb"] for r in found), 1),
                "losses": found[0]["losses"]}
        v = entry["variants"]
        if "plain" in v and "chunked" in v:
            entry["speedup"] = round(v["plain"]["median_ms"] / v["chunked"]["median_ms"], 2)
            entry["peak_rss_ratio"] = round(v["chunked"]["peak_rss_mb"] / v["plain"]["peak_rss_mb"], 3)
            entry["max_loss_difference"] = max(abs(a - b) for a, b in zip(v["plain"]["losses"], v["chunked"]["losses"]))
        if "plain" in v and "bf16" in v:
            entry["bf16_speedup"] = round(v["plain"]["median_ms"] / v["bf16"]["median_ms"], 2)
            entry["bf16_peak_rss_ratio"] = round(v["bf16"]["peak_rss_mb"] / v["plain"]["peak_rss_mb"], 3)
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated from {', '.join(SHAPES)}")
    parser.add_argument("--variants", default="plain,chunked", help="comma-separated from plain, chunked, bf16")
    parser.add_argument("--threads", default="2", help="comma-separated thread counts")
    parser.add_argument("--chunks", default="", help="comma-separated chunk_elements for `chunked` (a sweep)")
    parser.add_argument("--rounds", type=int, default=2, help="processes per case; the order alternates")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "step")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--gemm", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return
    if args.gemm:
        print(json.dumps({"gflops": measure_gemm(int(args.gemm[0]), args.gemm[1])}))
        return

    import torch

    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    threads = [int(t) for t in args.threads.split(",")]
    chunks = [int(c) for c in args.chunks.split(",") if c] or [None]
    variants = [(v, c) for v in args.variants.split(",") for c in (chunks if v == "chunked" else [None])]
    cpu = cpu_info()
    sgemm = {th: round(in_child("--gemm", str(th), "float32")["gflops"], 1) for th in threads}
    bf16_gemm = {th: round(in_child("--gemm", str(th), "bfloat16")["gflops"], 1) for th in threads}
    rows = []
    for round_ in range(args.rounds):
        for shape in args.shapes.split(","):
            for th in threads:
                for variant, chunk in (variants if round_ % 2 == 0 else variants[::-1]):
                    case = {"shape": shape, "items": SHAPES[shape].items, "variant": variant, "threads": th,
                            "chunk_elements": chunk, "warmup": args.warmup, "steps": args.steps, "round": round_}
                    r = in_child("--worker", json.dumps(case))
                    r["flops"] = step_flops(r)
                    r["gflop"] = sum(r["flops"].values()) / 1e9
                    rows.append(r)
                    print(f"{shape} {variant}{'@' + str(chunk) if chunk else ''} threads={th} round={round_}: "
                          f"{r['median_ms']:.0f} ms, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    table = summarise(rows)
    for entry in table:
        for v in entry["variants"].values():
            v["pct_of_peak"] = round(100 * v["gflop_per_s"] / (cpu["peak_gflops"] * entry["threads"] / cpu["cores"]), 1)
            v["pct_of_sgemm"] = round(100 * v["gflop_per_s"] / sgemm[entry["threads"]], 1)
    out = {"date": started.isoformat(timespec="seconds"), "command": " ".join(["bench/step.py", *sys.argv[1:]]),
           **provenance(), "machine": {**cpu, "platform": platform.platform(), "torch": torch.__version__,
                                       "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                           / 2**30, 1)},
           "sgemm_2048_gflops": sgemm, "bf16_gemm_2048_gflops": bf16_gemm,
           "load_average_start": load_start, "load_average_end": os.getloadavg(),
           "wall_seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
           "inputs": {"batch": BATCH, "positions": POSITIONS, "attributes": ATTRIBUTES,
                      "item_attributes": ITEM_ATTRIBUTES, "zipf": ZIPF, "synthetic": True,
                      "shapes": {k: vars(v) for k, v in SHAPES.items()}},
           "flops_formula": step_flops.__doc__.split("\n")[0] + " retrieval 6MND; item tower over the catalog "
                            "N(4*384*H + 6*H*D); encoder 3*L*(24*B*T*D^2 + 4*B*T^2*D); InfoNCE 6K^2D + tower(K)",
           "summary": table, "cases": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"step-{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    print(f"\n{cpu['model']}, {cpu['cores']} cores; peak {cpu['peak_derivation']}; "
          f"torch sgemm 2048^3: {sgemm} GFLOP/s (bfloat16: {bf16_gemm})\n")
    print("| shape | items | threads | variant | ms/step | GFLOP | GFLOP/s | % peak | % sgemm | peak RSS MB "
          "| step MB | speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in table:
        for name, v in e["variants"].items():
            print(f"| {e['shape']} | {e['items']:,} | {e['threads']} | {name} | {v['median_ms']:.0f} "
                  f"| {e['gflop']:.1f} | {v['gflop_per_s']:.0f} | {v['pct_of_peak']:.0f} | {v['pct_of_sgemm']:.0f} "
                  f"| {v['peak_rss_mb']:.0f} | {v['step_peak_mb']:.0f} "
                  f"| {e.get({'chunked': 'speedup', 'bf16': 'bf16_speedup'}.get(name, ''), '')} |")


if __name__ == "__main__":
    main()
