"""`dvc repro` and the Prefect training flow, from the same params, record and write the same things."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
from checkouts import TARGET, copy_checkout, dvc, lock_entries, set_params, slice_params

from components.config import load_params
from flows.dvcfile import load_stages, plan

# What a stage records of the wall clock beside its results: the one thing two runs cannot share.
TIMINGS = {"train_seconds"}


def _same_file(a: Path, b: Path) -> bool:
    """Equal bytes, or for Parquet and NumPy files equal content (writer metadata may differ), or for
    JSON equal content but for timings."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix == ".json":
        def untimed(path: Path) -> dict:
            return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMINGS}

        return untimed(a) == untimed(b)
    if a.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
            return True
        except AssertionError:
            return False
    if a.suffix == ".npy":
        return np.array_equal(np.load(a), np.load(b))
    return False


def test_dvc_repro_and_the_flow_write_and_record_the_same(first_run, tmp_path, embedding_cache):
    dvc_repo = copy_checkout(tmp_path / "dvc-repo")
    set_params(dvc_repo, slice_params(embedding_cache))
    done = dvc(dvc_repo, "repro", TARGET)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    stages = plan(load_stages(load_params(dvc_repo / "params.yaml"), dvc_repo / "dvc.yaml"), TARGET)
    # The same code, raw data and params in both records: the flow ran the stages DVC would have.
    # (Deps written by an earlier stage are compared as outputs below: a timing may differ in them.)
    by_dvc, by_flow = lock_entries(dvc_repo), lock_entries(first_run.snapshot)
    written = [out for stage in stages for out in stage.outputs]

    def sources(entry: dict) -> list[dict]:
        return [d for d in entry["deps"] if not any(d["path"] == o or d["path"].startswith(o + "/") for o in written)]

    for stage in stages:
        flow_entry, dvc_entry = by_flow[stage.name], by_dvc[stage.name]
        assert flow_entry["cmd"] == dvc_entry["cmd"] == f"recloop {stage.name}"
        assert sources(flow_entry) == sources(dvc_entry) and sources(flow_entry), stage.name
        assert flow_entry["params"] == dvc_entry["params"], stage.name

    outs = [out for stage in stages for out in stage.outs]
    assert outs == ["data/canonical", "data/validated", "data/split", "data/features", "models/pretrained",
                    "models/finetuned"]
    for out in outs:
        from_dvc, from_flow = dvc_repo / out, first_run.snapshot / out
        files = sorted(str(p.relative_to(from_dvc)) for p in from_dvc.rglob("*") if p.is_file())
        assert files, f"dvc repro wrote nothing in {out}"
        assert files == sorted(str(p.relative_to(from_flow)) for p in from_flow.rglob("*") if p.is_file()), out
        differing = [f for f in files if not _same_file(from_dvc / f, from_flow / f)]
        assert not differing, f"{out}: the flow and dvc repro wrote different {differing}"
