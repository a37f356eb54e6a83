"""The full-softmax loss alone, this tree's against another revision's, interleaved in one process.

bench/step.py times whole steps, one process per case, minutes apart; on a shared machine whose speed
drifts by 2x within minutes that hides a 10-20% change in one part of the step. Here the two versions
of `components/models/softmax.py` run by turns, call after call (A B, then B A), on the same inputs:
forward and backward of `full_softmax_cross_entropy` for M = 6,400 positions (bench/step.py's batch),
D = 64, the catalog sizes of bench/step.py. Drift hits both alike; the table gives each one's median
and the ratio of the medians.

    flock /tmp/cpu.lock .venv/bin/python bench/softmax.py --against a312f81
    flock /tmp/cpu.lock .venv/bin/python bench/softmax.py --against a312f81 --shapes ml-latest-small --reps 31

One JSON per run goes to bench/results/step/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provenance import provenance  # noqa: E402
from step import BATCH, POSITIONS, SHAPES, cpu_info, module_at  # noqa: E402

PATH = "components/models/softmax.py"
DIM = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="git revision whose softmax.py is the baseline")
    parser.add_argument("--shapes", default="ml-latest-small,sports", help=f"comma-separated from {', '.join(SHAPES)}")
    parser.add_argument("--reps", type=int, default=15, help="timed calls per version and shape")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "step")
    args = parser.parse_args()

    import torch

    from components.models import softmax as this

    torch.set_num_threads(args.threads)
    versions = {args.against: module_at(args.against, PATH).full_softmax_cross_entropy,
                "this tree": this.full_softmax_cross_entropy}
    started = dt.datetime.now(dt.timezone.utc)
    m = BATCH * POSITIONS
    table = []
    for shape in args.shapes.split(","):
        n = SHAPES[shape].items
        g = torch.Generator().manual_seed(0)
        h = torch.randn(m, DIM, generator=g).requires_grad_()
        items = (0.3 * torch.randn(n, DIM, generator=g)).requires_grad_()
        target = torch.randint(0, n, (m,), generator=g)
        seconds: dict[str, list[float]] = {name: [] for name in versions}
        losses = {}
        for rep in range(args.reps + 1):  # the first call of each warms up and is not timed
            for name, loss_fn in (list(versions.items()) if rep % 2 else list(versions.items())[::-1]):
                h.grad = items.grad = None
                began = time.perf_counter()
                loss = loss_fn(h, items, target)
                loss.backward()
                if rep:
                    seconds[name].append(time.perf_counter() - began)
                losses[name] = (float(loss.detach()), float(h.grad.norm()), float(items.grad.norm()))
        medians = {name: 1000 * statistics.median(s) for name, s in seconds.items()}
        entry = {"shape": shape, "items": n, "positions": m, "dim": DIM,
                 "ms": {name: [round(1000 * x, 2) for x in s] for name, s in seconds.items()},
                 "median_ms": {name: round(v, 1) for name, v in medians.items()},
                 "speedup": round(medians[args.against] / medians["this tree"], 3),
                 "loss_and_gradient_norms": losses}
        table.append(entry)
        print(f"{shape} (N={n:,}): {args.against} {medians[args.against]:.0f} ms, this tree "
              f"{medians['this tree']:.0f} ms, {entry['speedup']:.2f}x; loss and gradient norms {losses}",
              flush=True)
    out = {"date": started.isoformat(timespec="seconds"), "command": " ".join(["bench/softmax.py", *sys.argv[1:]]),
           **provenance(), "machine": cpu_info(), "torch": torch.__version__, "threads": args.threads,
           "against": args.against, "reps": args.reps, "results": table}
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"softmax-{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
