"""Per-image predictions, the paired bootstrap, its table marks and ``gmbench compare``.

References are written apart from the code under test: gmbench's own ``evaluate`` on the
explicitly duplicated dataset, scikit-learn's average_precision_score on each resample
re-sorted, and Holm's procedure by hand."""
import copy
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gmbench.cli import main
from gmbench.metrics import evaluate
from gmbench.predictions import PredictionsError, read_predictions, write_predictions
from gmbench.tables import significance as S
from gmbench.tables.significance import Comparison, Run, compare, holm, resample_weights
from gmbench.utils.io import append_jsonl, read_jsonl


def _data(n=240, c=4, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < 0.25).astype(np.int8)
    t[0] = 1          # every class has a positive
    p = np.clip(0.6 * rng.random((n, c)) + 0.35 * (t == 1), 0, 1)
    if ties:
        p = np.round(p, 1)
    return p, t


@pytest.mark.parametrize("mode", ["noninterpolated", "voc_interpolated"])
def test_weighted_metrics_equal_gmbench_on_the_duplicated_dataset(mode):
    p, t = _data(ties=True)
    t[3, 1] = t[7, 2] = -1                      # ignored entries (VOC difficult)
    run = Run(p, t, {"ap": mode, "top_k": 2})
    names = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "CF1@2", "OF1@2"]
    ones = S.run_metrics(run, np.ones((1, len(p)), np.uint8), names)
    ref = evaluate(p, t, ap=mode, top_k=2)
    np.testing.assert_allclose(ones["AP"][:, 0], ref["AP"], atol=1e-12)
    for k in names:
        assert ones[k][0] == pytest.approx(ref[k], abs=1e-12), k
    w = resample_weights(len(p), 4, seed=3)
    got = S.run_metrics(run, w, names)
    for b in range(4):
        idx = np.repeat(np.arange(len(p)), w[b])         # image i appears w[b, i] times
        ref = evaluate(p[idx], t[idx], ap=mode, top_k=2)
        np.testing.assert_allclose(got["AP"][:, b], ref["AP"], atol=1e-12)
        for k in names:
            assert got[k][b] == pytest.approx(ref[k], abs=1e-12), (k, b)


def test_resample_weights_are_multinomial_counts():
    w = resample_weights(50, 300, seed=1)
    assert w.shape == (300, 50) and (w.sum(1) == 50).all()
    assert abs(w.mean() - 1) < 0.05 and abs(w.var() - (1 - 1 / 50)) < 0.1   # Binomial(n, 1/n)
    assert np.array_equal(w, resample_weights(50, 300, seed=1))


def _methods(n=300, c=4, seed=0):
    """Targets and 2 seeds of three methods: B like A (null effect), C much better."""
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < 0.3).astype(np.int8)
    t[0] = 1

    def method(signal):
        return [1 / (1 + np.exp(-(rng.normal(size=(n, c)) + signal * t - 1))) for _ in range(2)]
    return t, {"A": method(1.0), "B": method(1.0), "C": method(3.0)}


def _sk_reference(t, rows, w):
    """Per row and resample: re-sort with scikit-learn, mAP, mean over seeds. [B] per row."""
    from sklearn.metrics import average_precision_score

    def m_ap(p, y):
        return np.mean([average_precision_score(y[:, k], p[:, k]) for k in range(y.shape[1])
                        if y[:, k].any()])
    out = {}
    for label, seeds in rows.items():
        vals = []
        for b in range(len(w)):
            idx = np.repeat(np.arange(len(t)), w[b])
            vals.append(np.mean([m_ap(p[idx], t[idx]) for p in seeds]))
        out[label] = np.array(vals)
    return out


def _p_by_hand(d):
    tail = min((d <= 0).sum(), (d >= 0).sum())
    return min(1.0, 2 * (1 + tail) / (len(d) + 1))


def test_known_and_null_effects_and_a_slow_reference_loop():
    t, rows = _methods(n=200, c=3)
    B = 100
    res = compare({k: [Run(p, t) for p in v] for k, v in rows.items()}, resamples=B, seed=5)
    assert res.ref == "C"
    # null effect: A against B
    null = compare({k: [Run(p, t) for p in rows[k]] for k in ("A", "B")}, resamples=B, seed=5)
    other = [r for r in null.rows if r != null.ref][0]
    lo, hi = null.ci[other]["mAP"]
    assert lo < 0 < hi
    for k in ("A", "B"):                                # known effect: far below C
        lo, hi = res.ci[k]["mAP"]
        assert hi < 0 and res.significant(k)
    ref = _sk_reference(t, rows, resample_weights(len(t), B, seed=5))
    for k in ("A", "B"):
        d = ref[k] - ref["C"]
        np.testing.assert_allclose(np.percentile(d, [2.5, 97.5]), res.ci[k]["mAP"], atol=1e-9)
        assert res.p[k]["mAP"] == pytest.approx(_p_by_hand(d))
    d = ref[other] - ref[null.ref]
    np.testing.assert_allclose(np.percentile(d, [2.5, 97.5]), null.ci[other]["mAP"], atol=1e-9)
    assert null.p[other]["mAP"] == pytest.approx(_p_by_hand(d))
    assert null.p[other]["mAP"] > 0.05 and not null.significant(other)


def test_holm_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.2]), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(holm([0.5, 0.01]), [0.5, 0.02])
    assert holm([0.6, 0.6, 0.6]).tolist() == [1.0, 1.0, 1.0]


def test_compare_marks_with_the_holm_corrected_p():
    t, rows = _methods()
    res = compare({k: [Run(p, t) for p in v] for k, v in rows.items()}, resamples=60, seed=1)
    others = [r for r in res.rows if r != res.ref]
    np.testing.assert_allclose([res.p_holm[r]["mAP"] for r in others],
                               holm([res.p[r]["mAP"] for r in others]))
    c = Comparison(["X", "Y"], "X", ["mAP"], 100, {}, {"Y": {"mAP": -0.1}}, {}, {"Y": {"mAP": 0.03}},
                   {"Y": {"mAP": 0.06}})
    assert not c.significant("Y")     # p < 0.05 alone does not mark a row


def test_predictions_round_trip_and_tamper_detection(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random((7, 3)).astype(np.float32)
    targets = np.array([[1, 0, -1]] * 7, np.int8)
    entry = write_predictions(tmp_path, "r1", [f"img{i}" for i in range(7)], probs, targets)
    assert entry["file"] == "preds/r1.npz" and len(entry["sha256"]) == 64
    got = read_predictions(tmp_path, entry)
    assert got.probs.dtype == np.float32 and got.image_ids.dtype.kind == "U"
    np.testing.assert_array_equal(got.probs, probs)
    np.testing.assert_array_equal(got.targets, targets)
    assert got.image_ids.tolist() == [f"img{i}" for i in range(7)]
    with np.load(tmp_path / "preds" / "r1.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["image_ids", "probs", "targets"]
    raw = bytearray((tmp_path / "preds" / "r1.npz").read_bytes())
    raw[-30] ^= 1
    (tmp_path / "preds" / "r1.npz").write_bytes(bytes(raw))
    with pytest.raises(PredictionsError, match=r"r1\.npz: sha256"):
        read_predictions(tmp_path, entry)
    with pytest.raises(PredictionsError, match="missing"):
        read_predictions(tmp_path, {"file": "preds/r2.npz", "sha256": "0" * 64})
    with pytest.raises(PredictionsError, match="inside the suite folder"):
        read_predictions(tmp_path, {"file": "../x.npz", "sha256": "0" * 64})


# ------------------------------------------------------------------ a suite folder, by hand
def _suite(tmp_path, with_preds=("A", "B", "C"), loss=None):
    """runs.jsonl + preds/ of three rows × 2 seeds on one test set (C best, A ≈ B)."""
    t, rows = _methods(seed=2)
    d = tmp_path / "s"
    for label, seeds in rows.items():
        for s, p in enumerate(seeds):
            ev = evaluate(p, t)
            cfg = {"seed": s, "loss": {"name": loss if (loss and label == "B") else "default"},
                   "train": {"epochs": 4}, "eval": {}, "model": {"name": label.lower()}}
            rec = {"status": "finished", "suite": "s", "row": label, "method": label.lower(),
                   "dataset": "synthetic", "seed": s, "run_id": f"{label}-{s}",
                   "metrics": {k: v for k, v in ev.items() if k != "AP"},
                   "per_class_ap": {f"c{k}": v for k, v in enumerate(ev["AP"])},
                   "chance_mAP": 0.3, "config": cfg, "row_order": list(rows),
                   "table": {"columns": ["mAP", "CF1"], "chance": True}}
            if label in with_preds:
                rec["predictions"] = write_predictions(d, rec["run_id"], list(range(len(t))), p, t)
            append_jsonl(d / "runs.jsonl", rec)
    return d


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    return _suite(tmp_path_factory.mktemp("sig"))


def test_table_marks_rows_below_the_best(suite_dir):
    from gmbench.tables import write_tables
    write_tables(suite_dir, ("csv", "md", "tex"), resamples=200)
    md = (suite_dir / "table.md").read_text()
    line = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "↓" in line["A"] and "↓" in line["B"] and "↓" not in line["C"]
    assert "Holm-corrected over the 2 rows compared" in md and "(C)" in md
    assert "std_a + std_b" not in md and "spread" not in md
    assert "0.3 ±" not in md and "30.0 ±" not in md          # chance mAP: no spread
    rows = list(csv.DictReader(io.StringIO((suite_dir / "table.csv").read_text())))
    got = {r["row"]: r for r in rows}
    assert got["C"]["mAP below best"] == "ref" and got["A"]["mAP below best"] == "yes"
    assert float(got["A"]["mAP delta CI high"]) < 0 and float(got["A"]["mAP p Holm"]) < 0.05
    assert got["A"]["chance mAP std"] == ""
    tex = (suite_dir / "table.tex").read_text()
    assert r"$\downarrow$" in tex and "Holm" in tex
    write_tables(suite_dir, ("md", "tex"), ci=True, resamples=200)
    assert "to best [95% CI]" in (suite_dir / "table.md").read_text()
    assert r"[95\% CI]" in (suite_dir / "table.tex").read_text()


def test_rows_without_predictions_get_no_mark_and_a_note(tmp_path):
    from gmbench.tables import write_tables
    d = _suite(tmp_path, with_preds=("B", "C"), loss="asl")
    write_tables(d, ("md",), resamples=100)
    md = (d / "table.md").read_text()
    line = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "↓" not in line["A"] and "↓" in line["B"]
    assert ("No significance mark for A: the records predate per-image predictions (rerun to "
            "keep predictions).") in md
    assert "Settings that differ between the rows: loss.name: default (A, C); asl (B)." in md


def test_a_tampered_predictions_file_stops_the_table(tmp_path):
    from gmbench.tables import write_tables
    d = _suite(tmp_path)
    f = d / "preds" / "B-1.npz"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(PredictionsError, match="B-1.npz"):
        write_tables(d, ("md",), resamples=20)
    assert main(["compare", str(d), "--resamples", "20"]) == 1


def test_cli_compare(suite_dir, capsys):
    assert main(["compare", str(suite_dir), "--resamples", "200", "--metrics", "mAP,CF1",
                 "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "reference: C" in out and "Δ mAP [95% CI]" in out and "Δ CF1 [95% CI]" in out
    a = next(ln for ln in out.splitlines() if ln.startswith("| A |"))
    assert "↓" in a and "[−" in a
    rows = list(csv.DictReader(open(suite_dir / "compare_per_class.csv")))
    assert {r["row"] for r in rows} == {"A", "B"} and len(rows) == 8
    a_rows = [float(r["delta_AP"]) for r in rows if r["row"] == "A"]
    assert a_rows == sorted(a_rows)
    assert all(float(r["ci_low"]) <= float(r["delta_AP"]) <= float(r["ci_high"]) for r in rows)
    assert (suite_dir / "compare_per_class.svg").read_text().lstrip().startswith("<?xml")
    assert (suite_dir / "compare_per_class.pdf").exists()
    assert main(["compare", str(suite_dir), "--resamples", "50", "--ref", "A"]) == 0
    assert "reference: A" in capsys.readouterr().out
    assert main(["compare", str(suite_dir), "--ref", "Nope"]) == 2
    assert "is not a row" in capsys.readouterr().err


def test_rows_limits_the_printed_table(suite_dir):
    from gmbench.cli.core import _printed_table
    from gmbench.tables import write_tables
    write_tables(suite_dir, ("md",), resamples=50)
    suite = SimpleNamespace(rows=[SimpleNamespace(label="A"), SimpleNamespace(label="B")])
    text = _printed_table(suite_dir, suite, ["A*", "B"])
    labels = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ")]
    assert labels[1:] == ["A", "B"] and "2 row(s) shown" in text
    assert "| C " in _printed_table(suite_dir, suite, [])      # no --rows: the folder's table


def test_snapshot_comparison_needs_equal_settings(suite_dir):
    from gmbench.compare import compare_records
    now = read_jsonl(suite_dir / "runs.jsonl")
    same = compare_records(now, copy.deepcopy(now), "snapshot")
    assert "| A | " in same and "0.0" in same and "not compared" not in same
    then = copy.deepcopy(now)
    for r in then:
        r["config"]["train"]["epochs"] = 1
        r["config"]["train"]["log_every"] = 7       # cannot change a result: not named
    text = compare_records(now, then, "snapshot")
    a = next(ln for ln in text.splitlines() if ln.startswith("| A |"))
    assert a.split("|")[4].strip() == "–"
    assert "settings differ from snapshot's for every row: train.epochs 4 now, 1 in snapshot)" in text
    assert "log_every" not in text


def test_a_run_writes_verified_predictions(tmp_path):
    """End to end: every record of a tiny suite names a predictions file that verifies and
    gives exactly the record's metrics (the evaluated float32 scores, no rounding)."""
    from conftest import tiny_sets
    from test_runner import write_suite
    suite = write_suite(tmp_path, seeds=(0,))
    out = tmp_path / "out"
    args = [x for s in tiny_sets(**{"data.train_transform": "plain",
                                    "data.test_transform": "plain"}) for x in ("--set", s)]
    assert main(["run", "--suite", suite, "--out", str(out), "--rows", "ResNet GMP"] + args) == 0
    d = out / "tiny"
    for rec in read_jsonl(d / "runs.jsonl"):
        p = read_predictions(d, rec["predictions"])
        assert rec["predictions"]["file"] == f"preds/{rec['run_id']}.npz"
        assert p.probs.shape == (16, 5) and len(p.image_ids) == 16
        ev = evaluate(p.probs, p.targets)
        for k in ("mAP", "CF1", "OF1", "OF1@3"):
            assert ev[k] == pytest.approx(rec["metrics"][k], abs=1e-9), k
        assert json.dumps(rec)  # the record stays plain JSON
    assert list((d / "checkpoints").iterdir())  # checkpoints cleaned, preds kept
    assert (d / "preds").is_dir() and Path(d / rec["predictions"]["file"]).is_file()


def test_tables_over_two_datasets_test_each_dataset_apart(tmp_path):
    from gmbench.tables import write_tables
    d = tmp_path / "two"
    for ds, seed in (("d1", 3), ("d2", 4)):
        t, rows = _methods(seed=seed)
        for label in ("A", "C"):
            p = rows[label][0]
            ev = evaluate(p, t)
            rid = f"{label}-{ds}"
            rec = {"status": "finished", "suite": "two", "row": f"{label} {ds}",
                   "table_row": label, "method": label.lower(), "dataset": ds, "seed": 0,
                   "run_id": rid, "metrics": {"mAP": ev["mAP"]},
                   "per_class_ap": {f"c{k}": v for k, v in enumerate(ev["AP"])},
                   "config": {"eval": {}}, "row_order": ["A d1", "C d1", "A d2", "C d2"],
                   "table": {"columns": ["d1/mAP", "d2/mAP"]},
                   "predictions": write_predictions(d, rid, range(len(t)), p, t)}
            append_jsonl(d / "runs.jsonl", rec)
    write_tables(d, ("md", "csv"), ci=True, resamples=100)
    md = (d / "table.md").read_text()
    a = next(ln for ln in md.splitlines() if ln.startswith("| A "))
    assert a.count("↓") == 2 and "Δ d1 mAP to best" in md and "Δ d2 mAP to best" in md
    got = next(csv.DictReader(io.StringIO((d / "table.csv").read_text())))
    assert got["d1/mAP below best"] == "yes" and got["d2/mAP below best"] == "yes"
