"""Label side information: statistics by hand, GloVe parsing (6B and 840B styles),
multi-word averaging, missing-word report, seeded random fallback, .npy/.json cache."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from gmbench.data import data_config, read_labels
from gmbench.data import side_info as si
from gmbench.data.base import LabelSet
from gmbench.data.glove import (CLASS_WORDS, class_words, glove_embeddings, name_seed,
                                random_embeddings, read_glove_words)

try:
    from fixtures_official import write_glove, write_voc
except ImportError:  # tests/ imported as a package
    from tests.fixtures_official import write_glove, write_voc

D = 4


def vec(*v):
    return np.asarray(v, dtype=np.float64)


# 840B style: tokens with spaces and case variants, "," first, a duplicate token later.
GLOVE = {",": vec(9, 9, 9, 9), "new york": vec(7, 7, 7, 7), "new": vec(1, 0, 0, 0),
         "dining": vec(1, 2, 3, 4), "table": vec(3, 2, 1, 0), "tv": vec(0, 0, 2, 0),
         "monitor": vec(0, 0, 0, 2), "fire": vec(1, 1, 0, 0), "hydrant": vec(0, 1, 1, 0),
         "bear": vec(0.5, -0.5, 0.25, 1), "at name@domain.com": vec(5, 5, 5, 5),
         "Bear": vec(8, 8, 8, 8)}


def glove_file(tmp_path, header=None, extra_lines=()):
    p = write_glove(tmp_path / "glove.840B.4d.txt", GLOVE, header=header)
    with open(p, "a", encoding="utf-8") as f:
        for ln in extra_lines:
            f.write(ln + "\n")
    return p


def labels(targets, names=("a", "b", "c"), ids=None):
    t = np.asarray(targets, dtype=np.int8)
    ids = ids or [f"{i:04d}" for i in range(len(t))]
    return LabelSet(image_ids=ids, class_names=list(names), targets=t)


def test_label_statistics_by_hand():
    st = si.label_statistics(np.array([[1, 0, -1], [1, 1, 0], [0, 1, 1], [0, 0, 0]]))
    np.testing.assert_array_equal(st["class_counts"], [2, 2, 1])
    np.testing.assert_allclose(st["label_ratios"], [0.5, 0.5, 0.25])
    np.testing.assert_array_equal(st["cooccurrence"], [[2, 1, 0], [1, 2, 1], [0, 1, 1]])
    assert st["class_counts"].dtype == np.int64 and st["cooccurrence"].dtype == np.int64


def test_label_statistics_match_a_loop_on_random_data():
    rng = np.random.default_rng(3)
    t = rng.choice([-1, 0, 1], size=(57, 6), p=[0.1, 0.6, 0.3])
    st = si.label_statistics(t)
    for i in range(6):
        for j in range(6):
            assert st["cooccurrence"][i, j] == sum(1 for r in t if r[i] == 1 and r[j] == 1)
    np.testing.assert_allclose(st["label_ratios"], [(t[:, c] == 1).mean() for c in range(6)])


def test_class_word_mapping():
    assert class_words("diningtable") == ("dining", "table")
    assert class_words("pottedplant") == ("potted", "plant")
    assert class_words("tvmonitor") == ("tv", "monitor")
    assert class_words("fire hydrant") == ("fire", "hydrant")
    assert class_words("Teddy Bear") == ("teddy", "bear")
    assert class_words("hair_drier") == ("hair", "drier")
    assert all(w == w.lower() for ws in CLASS_WORDS.values() for w in ws)


def test_glove_840b_tokens_with_spaces(tmp_path):
    p = glove_file(tmp_path)
    got = read_glove_words(p, ["new", "bear", "york", "name@domain.com"], D)
    assert set(got) == {"new", "bear"}  # "new york" and "at name@..." are other tokens
    np.testing.assert_array_equal(got["new"], GLOVE["new"])
    np.testing.assert_array_equal(got["bear"], GLOVE["bear"])  # case-sensitive: not "Bear"


def test_glove_stops_after_last_needed_word(tmp_path):
    # A broken line after every wanted word is found must never be parsed.
    p = glove_file(tmp_path, extra_lines=["tv 1 2", "zzz not numbers at all x"])
    assert set(read_glove_words(p, ["tv", "dining"], D)) == {"tv", "dining"}
    with pytest.raises(ValueError, match=r":13: 2 numbers, expected 4"):
        read_glove_words(p, ["tv", "absent"], D)


def test_glove_first_occurrence_wins_and_header_skipped(tmp_path):
    p = glove_file(tmp_path, header="12 4", extra_lines=["new 6 6 6 6"])
    np.testing.assert_array_equal(read_glove_words(p, ["new"], D)["new"], GLOVE["new"])


def test_glove_dimension_mismatch_is_explained(tmp_path):
    p = glove_file(tmp_path)
    with pytest.raises(ValueError, match="embedding_dim=3"):
        read_glove_words(p, ["new"], 3)
    with pytest.raises(ValueError, match="embedding_dim=5"):
        read_glove_words(p, ["new"], 5)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_glove_words(tmp_path / "nope.txt", ["new"], D)


def test_multiword_average_and_missing_report(tmp_path):
    names = ["diningtable", "tvmonitor", "fire hydrant", "teddy bear", "new", "xyzzy"]
    with pytest.warns(UserWarning, match="teddy, xyzzy"):
        emb, rep = glove_embeddings(names, glove_file(tmp_path), D)
    assert emb.shape == (6, D) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], [2, 2, 2, 2])           # mean(dining, table)
    np.testing.assert_allclose(emb[1], [0, 0, 1, 1])           # mean(tv, monitor)
    np.testing.assert_allclose(emb[2], [0.5, 1, 0.5, 0])       # mean(fire, hydrant)
    np.testing.assert_allclose(emb[3], GLOVE["bear"])          # teddy missing: bear only
    np.testing.assert_allclose(emb[4], GLOVE["new"])           # not "new york"
    assert rep["missing_words"] == ["teddy", "xyzzy"]
    assert rep["classes_without_vector"] == ["xyzzy"]
    mean_norm = np.linalg.norm(emb[:5], axis=1).mean()
    assert np.linalg.norm(emb[5]) == pytest.approx(mean_norm, rel=1e-5)


def test_random_embedding_is_seeded_by_names():
    a, sa = random_embeddings(["cat", "dog"], 16)
    b, sb = random_embeddings(["cat", "dog"], 16)
    c, sc = random_embeddings(["dog", "cat"], 16)
    np.testing.assert_array_equal(a, b)
    assert sa == sb == name_seed(["cat", "dog"]) and sc != sa
    assert not np.allclose(a, c)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)


def test_build_data_info_random_and_cache_reuse(tmp_path):
    ls = labels([[1, 0, -1], [1, 1, 0], [0, 1, 1], [0, 0, 0]])
    cfg = data_config("coco2014", embedding_dim=8)
    info = si.build_data_info(ls, cfg, tmp_path / "cache")
    assert info.extra["cache_hit"] is False and info.n_train == 4
    np.testing.assert_allclose(info.label_ratios, [0.5, 0.5, 0.25])  # -1 counts as absent
    assert info.embedding_source == f"random:seed={name_seed(['a', 'b', 'c'])}"
    entry = tmp_path / "cache" / "side_info" / si.cache_key(ls, cfg)
    assert sorted(os.listdir(entry)) == ["class_counts.npy", "cooccurrence.npy", "label_ratios.npy",
                                         "meta.json", "word_embeddings.npy"]
    json.loads((entry / "meta.json").read_text())
    mtimes = {f: (entry / f).stat().st_mtime_ns for f in os.listdir(entry)}
    again = si.build_data_info(ls, cfg, tmp_path / "cache")
    assert again.extra["cache_hit"] is True
    assert {f: (entry / f).stat().st_mtime_ns for f in os.listdir(entry)} == mtimes
    for a in ("label_ratios", "class_counts", "cooccurrence", "word_embeddings"):
        np.testing.assert_array_equal(getattr(again, a), getattr(info, a))
        assert getattr(again, a).dtype == getattr(info, a).dtype
    assert again.embedding_source == info.embedding_source
    # Different ids, targets or names → a different entry.
    keys = {si.cache_key(ls, cfg),
            si.cache_key(labels(ls.targets, ids=["x", "y", "z", "w"]), cfg),
            si.cache_key(labels(np.zeros((4, 3))), cfg),
            si.cache_key(labels(ls.targets, names=("a", "b", "d")), cfg)}
    assert len(keys) == 4


def test_cache_key_follows_glove_file_and_reports_missing(tmp_path):
    p = glove_file(tmp_path)
    ls = labels([[1, 0], [1, 1]], names=("teddy bear", "tvmonitor"))
    cfg = data_config("voc2007", glove=str(p), embedding_dim=D)
    with pytest.warns(UserWarning, match="teddy"):
        info = si.build_data_info(ls, cfg, tmp_path / "c")
    assert info.embedding_source == f"glove:{p.resolve()}"
    assert info.extra["missing_words"] == ["teddy"]
    with pytest.warns(UserWarning, match="teddy"):  # still reported from the cache
        hit = si.build_data_info(ls, cfg, tmp_path / "c")
    assert hit.extra["cache_hit"] and hit.extra["missing_words"] == ["teddy"]
    k1 = si.cache_key(ls, cfg)
    os.utime(p, ns=(1, 1))
    assert si.cache_key(ls, cfg) != k1


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    ls = labels([[1, 0, 1]])
    cfg = data_config("coco2014", embedding_dim=4)
    calls = []

    def dying_save(path, arr):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(path, arr)

    real = si.atomic_numpy_save
    monkeypatch.setattr(si, "atomic_numpy_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        si.build_data_info(ls, cfg, tmp_path / "c")
    assert os.listdir(tmp_path / "c" / "side_info") == []  # temp folder removed, no entry
    monkeypatch.setattr(si, "atomic_numpy_save", real)
    assert si.build_data_info(ls, cfg, tmp_path / "c").extra["cache_hit"] is False


def test_damaged_entry_is_recomputed(tmp_path):
    ls = labels([[1, 0, 1], [0, 0, 1]])
    cfg = data_config("coco2014", embedding_dim=4)
    first = si.build_data_info(ls, cfg, tmp_path / "c")
    entry = tmp_path / "c" / "side_info" / si.cache_key(ls, cfg)
    (entry / "cooccurrence.npy").write_bytes(b"garbage")
    again = si.build_data_info(ls, cfg, tmp_path / "c")
    assert again.extra["cache_hit"] is False
    np.testing.assert_array_equal(again.cooccurrence, first.cooccurrence)
    assert si.build_data_info(ls, cfg, tmp_path / "c").extra["cache_hit"] is True
    assert [n for n in os.listdir(entry.parent) if n.startswith(".")] == []


def test_prepare_cli_on_voc_fixture(tmp_path, capsys):
    from gmbench.cli.data import add_parser
    root = write_voc(tmp_path / "voc", {"trainval": {
        "000001": [("car", False, (1, 1, 5, 5))], "000002": [("car", True, (1, 1, 5, 5))],
        "000003": [("dog", False, (1, 1, 5, 5)), ("car", False, (2, 2, 6, 6))]}, "test": {}})
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "prepare", "voc2007", "--root", str(root)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "3 images, 20 classes" in out and "random:seed=" in out and "written" in out
    ls = read_labels("voc2007", root, "trainval")
    info = si.build_data_info(ls, data_config("voc2007"), root / ".gmbench")
    assert info.extra["cache_hit"]
    car = info.class_names.index("car")
    assert info.class_counts[car] == 2 and info.label_ratios[car] == pytest.approx(2 / 3)
    assert info.cooccurrence[car, info.class_names.index("dog")] == 1
    assert info.word_embeddings.shape == (20, 300)
    assert args.func(args) == 0 and "reused" in capsys.readouterr().out


def test_default_cache_dir(tmp_path, monkeypatch):
    from gmbench.data import base
    from gmbench.data.base import data_cache_dir
    cfg = data_config("voc2007")
    assert data_cache_dir(cfg, tmp_path) == tmp_path.resolve() / ".gmbench"
    assert data_cache_dir(data_config("voc2007", cache_dir=str(tmp_path / "x")), tmp_path) \
        == tmp_path / "x"
    monkeypatch.setattr(base.os, "access", lambda *a: False)  # a read-only data folder
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GMBENCH_CACHE")
    got = data_cache_dir(cfg, tmp_path)
    assert got.parent == tmp_path / "home" / ".cache" / "gmbench" and got.name.startswith("voc2007-")
    monkeypatch.setenv("GMBENCH_CACHE", str(tmp_path / "own"))  # gmbench's cache, where it is set
    assert data_cache_dir(cfg, tmp_path).parent == tmp_path / "own"
