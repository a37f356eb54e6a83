"""What the content prior costs a served request: `BundleRecommender.recommend` in-process, one thread, for
ad-hoc histories (20 random catalog items) and known users, the same bundle served with its prior and with
it dropped, alternating in one process (a ratio measured in one run). Needs a `make run` first
(models/finetuned, data/split, data/features); one JSON per run to bench/results/serving/.

    flock /tmp/cpu.lock .venv/bin/python bench/serve_prior.py
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provenance import provenance  # noqa: E402

REQUESTS, ROUNDS, HISTORY = 200, 3, 20


def main() -> None:
    import numpy as np
    import torch

    from components.data.dataset import SplitData
    from components.serving.bundle import build_bundle, load_bundle
    from components.serving.recommender import BundleRecommender
    from components.serving.schemas import RecommendRequest

    torch.set_num_threads(1)
    bundle = load_bundle(build_bundle(REPO / "models/finetuned", REPO / "data/split", REPO / "data/features",
                                      Path(tempfile.mkdtemp())))
    if bundle.trained.prior is None:
        raise SystemExit("the model in models/finetuned carries no content prior (finetune.content_prior: false)")
    served = BundleRecommender(bundle, "1").prepare()
    prior, bundle.trained.prior = bundle.trained.prior, None
    alone = BundleRecommender(bundle, "1").prepare()
    bundle.trained.prior = prior
    data = SplitData.load(REPO / "data/split")
    ids = data.items["item_id"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    kinds = {"ad-hoc history": [RecommendRequest(history=list(ids[rng.integers(0, len(ids), HISTORY)]), k=10)
                                for _ in range(REQUESTS)],
             "known user": [RecommendRequest(user_id=u, k=10)
                            for u in data.users["user_id"].astype(str).to_numpy()[:REQUESTS]]}
    results = {}
    for kind, requests in kinds.items():
        ms: dict[str, list[float]] = {"with prior": [], "model alone": []}
        for r in range(ROUNDS):
            order = [("with prior", served), ("model alone", alone)]
            for name, rec in (order if r % 2 == 0 else order[::-1]):
                began = time.perf_counter()
                for request in requests:
                    rec.recommend(request)
                ms[name].append(1000 * (time.perf_counter() - began) / len(requests))
        med = {k: round(statistics.median(v), 3) for k, v in ms.items()}
        results[kind] = {"ms_per_request": med, "ratio": round(med["with prior"] / med["model alone"], 2)}
        print(f"{kind}: {med['with prior']:.2f} ms with the prior, {med['model alone']:.2f} ms alone", file=sys.stderr)
    stamp = dt.datetime.now(dt.timezone.utc)
    out = REPO / "bench" / "results" / "serving" / f"serve-prior-{stamp:%Y-%m-%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"items": int(len(ids)), "scoring": served.scoring, "prior": prior.describe(),
                               "threads": 1, "requests": REQUESTS, "rounds": ROUNDS, "results": results,
                               "date": stamp.isoformat(timespec="seconds"), **provenance()}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
