"""What an epoch costs at each batch size and sample kind, on a prepared dataset's real batches.

A step pays for the item tower over the whole catalog, the attribute bags and AdamW whatever its batch,
so on short-history catalogs (the Amazon sets) the batch size decides most of an epoch's time. For each
(samples, batch) asked for, this builds the model of `params.yaml` (plus --set overrides), draws one
epoch's length-bucketed batches as the training loop does, and times `--steps` training steps after
`--warmup`; it also times a validation pass. Needs the dataset prepared by bench/model.py first.

    flock /tmp/cpu.lock .venv/bin/python bench/batch_cost.py --dataset s3rec:Beauty --set model.dropout=0.5 \\
        --cases windows:128,windows:256,windows:512,windows:1024,prefixes:256,prefixes:1024

One JSON per run goes to bench/results/step/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import work_dir  # noqa: E402
from provenance import provenance  # noqa: E402
from step import cpu_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="as given to bench/model.py, e.g. s3rec:Beauty")
    parser.add_argument("--cases", default="windows:128,windows:256,prefixes:1024",
                        help="samples:batch pairs, samples being windows or prefixes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter overrides")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "step")
    args = parser.parse_args()

    import torch

    from components.config import load_params
    from components.models.sequences import PrefixRows
    from components.training.loop import length_batches, training_step
    from components.training.pretrain import fresh_model, objective
    from components.training.stage import load_inputs, negative_sampler, validator

    work = work_dir(args.dataset, args.set)
    if not (work / "split").is_dir():
        sys.exit(f"{work} has no split: run bench/model.py --dataset {args.dataset} first")
    params = load_params(REPO / "params.yaml", args.set)
    data, text = load_inputs(work / "split", work / "features")
    started = dt.datetime.now(dt.timezone.utc)
    rows_out = []
    for case in args.cases.split(","):
        samples, batch_size = case.split(":")
        trained, rows = fresh_model(data, text, params.model, params.pretrain, params.seed)
        model = trained.model
        rows = PrefixRows.of(rows) if samples == "prefixes" else rows
        generator = torch.Generator().manual_seed(params.seed)
        batches = length_batches(torch.randperm(len(rows), generator=generator), rows.lengths, int(batch_size),
                                 generator)
        sampler = negative_sampler(data, model.config.n_items, params.pretrain)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.pretrain.lr)
        model.train()
        timed = []
        for index in batches[:args.warmup + args.steps]:
            start = time.perf_counter()
            batch, targets = rows.batch(index)
            negatives = sampler.draw(torch.device("cpu")) if sampler is not None else None
            training_step(model, batch, targets, negatives, objective(params.pretrain), optimizer,
                          params.pretrain.grad_clip)
            timed.append(time.perf_counter() - start)
        ms = 1000 * sum(timed[args.warmup:]) / len(timed[args.warmup:])
        validate = validator(trained, data)
        model.eval()
        start = time.perf_counter()
        validate(model)
        valid_s = time.perf_counter() - start
        row = {"samples": samples, "batch_size": int(batch_size), "rows": len(rows), "steps_per_epoch": len(batches),
               "ms_per_step": round(ms, 1), "epoch_steps_seconds": round(ms * len(batches) / 1000, 1),
               "validation_seconds": round(valid_s, 2)}
        rows_out.append(row)
        print(f"{samples} batch {batch_size}: {ms:.0f} ms/step x {len(batches)} steps = "
              f"{row['epoch_steps_seconds']:.1f} s an epoch + {valid_s:.1f} s validation", file=sys.stderr, flush=True)
    out = {"date": started.isoformat(timespec="seconds"), "command": " ".join(["bench/batch_cost.py", *sys.argv[1:]]),
           **provenance(), "dataset": args.dataset, "users": data.n_users, "items": data.n_items,
           "machine": {**cpu_info(), "platform": platform.platform(), "torch": torch.__version__},
           "load_average_end": os.getloadavg(), "warmup": args.warmup, "steps": args.steps, "cases": rows_out}
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"batch-cost-{args.dataset.replace(':', '-')}-{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
