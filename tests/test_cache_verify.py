"""Issue 13: an instance cache is verified on rerun of `extract` and on open; extraction
honours SIGTERM and resumes to the same cache.

Caches come from the synthetic dataset with the `boxes` source (ResNet-18 trunk, random
weights, 32-64 px): a few seconds on a 2-core CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from gmbench.cli import main
from gmbench.instances import CacheError, open_cache
from gmbench.instances import cache as C
from gmbench.instances.verify import STAMP


def _cli(out, n_train=6, extra=(), px=48):
    return ["extract", "--dataset", "synthetic", "--split", "train", "-o", f"n_train={n_train}",
            "-o", "n_test=2", "-o", f"resolution={px}", "--source", "boxes", "--weights", "none",
            "--depth", "18", "--min-size", str(px - 16), "--max-size", str(px + 16), "--top-m", "4",
            "--shard-size", "2", "--batch-size", "1", "--num-workers", "0", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "cache"
    assert main(_cli(out)) == 0
    return out


@pytest.fixture
def cache_dir(ref, tmp_path):
    """A private copy of the finished reference cache (no stamp yet)."""
    dst = tmp_path / "cache"
    shutil.copytree(ref, dst)
    (dst / STAMP).unlink(missing_ok=True)
    return dst


def _corrupt(path: Path, n: int = 8) -> None:
    """Overwrite ``n`` bytes in the middle of the data, keeping the length."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(255 - b for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _items(root):
    c = open_cache(root)
    return [c[i] for i in range(len(c))]


def _assert_same(a, b):
    x, y = _items(a), _items(b)
    assert len(x) == len(y)
    for p, q in zip(x, y):
        for key in ("feat", "boxes", "boxes_px", "labels", "scores"):
            np.testing.assert_array_equal(p[key], q[key])
        assert p["image_size"] == q["image_size"]


def _count_hashes(monkeypatch):
    from gmbench.instances import verify
    calls = []
    real = verify.sha256_file

    def counting(path):
        calls.append(Path(path).name)
        return real(path)
    monkeypatch.setattr(C, "sha256_file", counting)
    monkeypatch.setattr(verify, "sha256_file", counting)
    return calls


# ----------------------------------------------------------------------------- (a) extract rerun

def test_extract_rerun_finds_and_re_extracts_a_corrupted_shard(ref, cache_dir, capsys):
    bad = cache_dir / "shards" / "shard-00001.feat.npy"
    _corrupt(bad)
    good0 = (cache_dir / "shards" / "shard-00000.feat.npy").stat().st_mtime_ns
    assert main(_cli(cache_dir)) == 0
    out, err = capsys.readouterr()
    assert not out.startswith("complete")
    assert out.startswith("repaired (1 damaged shard(s) re-extracted: 1)")
    assert "shard 1" in err and "shard-00001.feat.npy does not match its sha256" in err
    assert (cache_dir / "shards" / "shard-00000.feat.npy").stat().st_mtime_ns == good0
    _assert_same(ref, cache_dir)
    # and now it is whole: a rerun verifies and reports complete
    assert main(_cli(cache_dir)) == 0
    assert capsys.readouterr().out.startswith("complete (verified: full)")


def test_extract_quick_check_finds_a_truncated_shard(ref, cache_dir, capsys, monkeypatch):
    bad = cache_dir / "shards" / "shard-00002.boxes.npy"
    bad.write_bytes(bad.read_bytes()[:-8])
    assert main(_cli(cache_dir, extra=("--verify", "quick"))) == 0
    out, err = capsys.readouterr()
    assert out.startswith("repaired (1 damaged shard(s) re-extracted: 2)")
    assert "shard-00002.boxes.npy has" in err and "bytes" in err
    _assert_same(ref, cache_dir)


def test_extract_with_a_corrupt_manifest_rechecks_every_shard(ref, cache_dir, capsys):
    (cache_dir / "manifest.json").write_text("{not json")
    assert main(_cli(cache_dir)) == 0
    out, err = capsys.readouterr()
    assert "unreadable or inconsistent" in err and out.startswith("complete")
    _assert_same(ref, cache_dir)


# ----------------------------------------------------------------------------- (b) open

def test_open_names_a_corrupted_shard_even_after_a_stamp(cache_dir):
    assert open_cache(cache_dir).verified == "full"
    assert (cache_dir / STAMP).is_file()
    # the case: bytes changed after the cache was finished (and here verified)
    _corrupt(cache_dir / "shards" / "shard-00001.feat.npy")
    with pytest.raises(CacheError) as e:
        open_cache(cache_dir)
    msg = str(e.value)
    assert "shards/shard-00001.feat.npy does not match its sha256" in msg
    assert "python -m gmbench extract --dataset synthetic --split train --source boxes" in msg
    assert not (cache_dir / STAMP).exists()  # a failed check withdraws the stamp


def test_open_quick_check_catches_truncation_without_hashing(cache_dir, monkeypatch):
    bad = cache_dir / "shards" / "shard-00000.labels.npy"
    bad.write_bytes(bad.read_bytes()[:-4])
    calls = _count_hashes(monkeypatch)
    with pytest.raises(CacheError, match=r"quick check.*shard-00000\.labels\.npy has \d+ bytes"):
        open_cache(cache_dir)
    assert calls == []
    bad.unlink()
    with pytest.raises(CacheError, match="shard-00000.labels.npy is missing"):
        open_cache(cache_dir, verify="quick")


def test_quick_check_catches_a_wrong_header_from_an_old_manifest(cache_dir):
    # manifests written before byte counts were recorded: accepted, and the header still
    # has to agree with the manifest
    man = json.loads((cache_dir / "manifest.json").read_text())
    for sh in man["shards"]:
        sh.pop("bytes")
    (cache_dir / "manifest.json").write_text(json.dumps(man))
    assert open_cache(cache_dir).verified == "full"
    shards = cache_dir / "shards"
    os.replace(shards / "shard-00001.scores.npy", shards / "shard-00001.labels.npy")
    with pytest.raises(CacheError, match="shard-00001.labels.npy holds float32"):
        open_cache(cache_dir, verify="quick")


# ----------------------------------------------------------------------------- (c) stamp

def test_an_intact_cache_is_hashed_once(cache_dir, monkeypatch):
    calls = _count_hashes(monkeypatch)
    n_files = 3 * len(C.ARRAYS)
    assert open_cache(cache_dir).verified == "full" and len(calls) == n_files
    assert open_cache(cache_dir).verified == "stamp" and len(calls) == n_files
    assert open_cache(cache_dir, verify="full").verified == "full" and len(calls) == 2 * n_files
    # a file written since (same bytes, new ctime) is hashed again
    f = cache_dir / "shards" / "shard-00002.sizes.npy"
    f.write_bytes(f.read_bytes())
    assert open_cache(cache_dir).verified == "full" and len(calls) == 3 * n_files


def test_extract_on_an_intact_cache_verifies_and_stamps(cache_dir, capsys, monkeypatch):
    calls = _count_hashes(monkeypatch)
    assert main(_cli(cache_dir, extra=("--verify", "quick"))) == 0
    assert capsys.readouterr().out.startswith("complete (verified: quick)") and calls == []
    assert main(_cli(cache_dir)) == 0
    assert capsys.readouterr().out.startswith("complete (verified: full)")
    assert len(calls) == 3 * len(C.ARRAYS)
    assert open_cache(cache_dir).verified == "stamp"  # training's open hashes nothing more
    assert len(calls) == 3 * len(C.ARRAYS)


# ----------------------------------------------------------------------------- (d) SIGTERM

def test_sigterm_during_extraction_exits_143_and_a_rerun_completes(tmp_path):
    # larger images, so that the extraction outlasts the signal's delivery
    ref, out = tmp_path / "ref", tmp_path / "out"
    env = subprocess_env(OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "gmbench", *_cli(out, n_train=40, px=176)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "shards" / "shard-00000.json"
    deadline = time.monotonic() + 180
    while not first.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, stdout + stderr[-3000:]
    assert "stopped by signal 15 during extraction" in stderr
    assert "Traceback" not in stderr
    done = sorted((out / "shards").glob("shard-*.json"))
    assert 1 <= len(done) < 20 and not (out / "manifest.json").exists()
    assert not list((out / "shards").glob(".tmp-*"))
    with pytest.raises(CacheError, match="resume"):
        open_cache(out)
    assert main(_cli(out, n_train=40, px=176)) == 0
    assert main(_cli(ref, n_train=40, px=176)) == 0
    _assert_same(ref, out)
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (ref, out))
    assert [s["files"] for s in m1["shards"]] == [s["files"] for s in m2["shards"]]
