"""Atomic writes: a failed write leaves the old file whole."""
import json

import pytest
import torch

from gmbench.utils.io import append_jsonl, atomic_torch_save, atomic_write, read_jsonl


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]  # temp file removed


def test_jsonl_append_and_strict_read(tmp_path):
    p = tmp_path / "runs.jsonl"
    append_jsonl(p, {"a": 1})
    append_jsonl(p, {"a": 2})
    assert [r["a"] for r in read_jsonl(p)] == [1, 2]
    p.write_text(p.read_text() + '{"a": 3')
    with pytest.raises(ValueError, match="runs.jsonl:3"):
        read_jsonl(p)


def test_torch_save_roundtrip_weights_only(tmp_path):
    p = tmp_path / "c.pt"
    atomic_torch_save({"w": torch.arange(3), "meta": {"epoch": 2}}, p)
    obj = torch.load(p, weights_only=True)
    assert obj["meta"]["epoch"] == 2 and obj["w"].tolist() == [0, 1, 2]
    json.dumps(obj["meta"])
