"""The one write path: a failure mid-write leaves the old output intact and no temporary files behind."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.atomic import replaced, staged_dir, staged_files, write_json, write_text


class Boom(Exception):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_replaced_writes_through_a_path_taking_writer(tmp_path):
    frame = pd.DataFrame({"item_id": ["a", "b"], "value": [1.0, 2.0]})
    with replaced(tmp_path / "sub" / "t.parquet") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.suffix == ".parquet"
        frame.to_parquet(tmp, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sub" / "t.parquet"), frame)
    assert _leftovers(tmp_path / "sub") == []


def test_replaced_keeps_the_suffix_numpy_would_append(tmp_path):
    with replaced(tmp_path / "v.npy") as tmp:
        np.save(tmp, np.arange(3))
    with replaced(tmp_path / "c.npz") as tmp:
        np.savez(tmp, keys=np.array(["x"]))
    assert np.load(tmp_path / "v.npy").tolist() == [0, 1, 2]
    assert np.load(tmp_path / "c.npz")["keys"].tolist() == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "v.npy"]


def test_a_failure_inside_replaced_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"ndcg": 0.5})
    with pytest.raises(Boom):
        with replaced(target) as tmp:
            tmp.write_text("half a fi")
            raise Boom
    assert json.loads(target.read_text()) == {"ndcg": 0.5}
    assert _leftovers(tmp_path) == []


def test_a_failure_before_anything_is_written_leaves_no_file(tmp_path):
    with pytest.raises(Boom):
        with replaced(tmp_path / "new.txt"):
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_write_text_replaces_and_leaves_no_temp(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_staged_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with staged_dir(target) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(Boom):
        with staged_dir(target) as tmp:
            (tmp / "two").write_text("2")
            raise Boom
    assert sorted(p.name for p in target.iterdir()) == ["one"]
    assert _leftovers(tmp_path) == []


def test_staged_files_lands_together_and_keeps_other_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(Boom):
        with staged_files(tmp_path) as staging:
            (staging / "a.txt").write_text("new a")
            raise Boom
    assert (tmp_path / "a.txt").read_text() == "old a"
    with staged_files(tmp_path) as staging:
        (staging / "a.txt").write_text("new a")
        (staging / "b.txt").write_text("b")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"keep.txt": "mine", "a.txt": "new a", "b.txt": "b"}
