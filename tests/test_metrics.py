"""Metric layer: checked against scikit-learn, hand computations and invariants."""
from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest

from gmbench.metrics import (NoPositiveClassWarning, average_precision,
                             conventions, evaluate, format_percent, topk_mask)
from gmbench.metrics import core

SIX = ["CP", "CR", "CF1", "OP", "OR", "OF1"]


def _random(seed, n, c, density=0.2, ties=False, ignored=0.0):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 9, (n, c)) / 8.0 if ties else rng.random((n, c))
    t = (rng.random((n, c)) < density).astype(np.int8)
    t[rng.random((n, c)) < ignored] = -1
    t[0] = 1  # every class has a positive
    return p, t


def _quiet(fn, *args, **kwargs):
    """fn(...) with NoPositiveClassWarning silenced (fixtures that lack positives)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositiveClassWarning)
        return fn(*args, **kwargs)


def _same(a, b):
    """Dict equality that treats NaN == NaN."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)
        np.testing.assert_array_equal(x, y, err_msg=k)


# --- AP against scikit-learn ------------------------------------------------

# float64 scores; k/8 scores tie a lot (many negatives share a bucket with a positive)
@pytest.mark.parametrize("ties,ignored", [(False, 0.0), (True, 0.0), (True, 0.3)])
def test_ap_matches_sklearn(ties, ignored):
    skm = pytest.importorskip("sklearn.metrics")
    p, t = _random(0, 300, 9, ties=ties, ignored=ignored)
    out = evaluate(p, t)
    ref = []
    for c in range(p.shape[1]):
        keep = t[:, c] != -1
        ref.append(skm.average_precision_score(t[keep, c] == 1, p[keep, c]))
    np.testing.assert_allclose(out["AP"], ref, rtol=0, atol=1e-12)
    assert out["mAP"] == pytest.approx(np.mean(ref), abs=1e-12)
    assert out["n_classes_ap"] == 9


def test_ap_float32_and_torch_inputs_agree():
    torch = pytest.importorskip("torch")
    skm = pytest.importorskip("sklearn.metrics")
    p, t = _random(1, 120, 5)
    p32 = p.astype(np.float32)
    a = evaluate(p32, t)
    ref = [skm.average_precision_score(t[:, c] == 1, p32[:, c]) for c in range(5)]
    np.testing.assert_allclose(a["AP"], ref, rtol=0, atol=1e-12)
    _same(a, evaluate(torch.from_numpy(p32), torch.from_numpy(t).float()))
    _same(a, evaluate(p32.astype(np.float64), t.astype(np.int64)))
    half = torch.from_numpy(p32).to(torch.bfloat16)  # no numpy twin: widened on the way
    _same(evaluate(half, t), evaluate(half.float().numpy(), t))


def test_ties_hand_computed():
    # scores 0.9 (+), 0.5 (-), 0.5 (+), 0.1 (+): the tied pair is one threshold, so
    # the positive at 0.5 gets precision 2/3 whichever way the tie is ordered.
    p = np.array([[0.9], [0.5], [0.5], [0.1]])
    t = np.array([[1], [0], [1], [1]])
    want = (1 + F(2, 3) + F(3, 4)) / 3  # 29/36
    assert evaluate(p, t)["AP"][0] == pytest.approx(float(want), abs=1e-15)
    assert evaluate(p[[0, 2, 1, 3]], t[[0, 2, 1, 3]])["AP"][0] == evaluate(p, t)["AP"][0]
    # a whole tie group: 3 tied entries with 2 positives, then 1 positive below
    p = np.array([[0.7], [0.7], [0.7], [0.2], [0.1]])
    t = np.array([[1], [0], [1], [0], [1]])
    want = (F(2, 3) + F(2, 3) + F(3, 5)) / 3
    assert evaluate(p, t)["AP"][0] == pytest.approx(float(want), abs=1e-15)


def test_row_order_does_not_matter_even_with_ties():
    p, t = _random(2, 200, 6, ties=True, ignored=0.2)
    perm = np.random.default_rng(0).permutation(200)
    _same(evaluate(p, t), evaluate(p[perm], t[perm]))
    _same(evaluate(p, t, ap="voc_interpolated"),
          evaluate(p[perm], t[perm], ap="voc_interpolated"))


def test_negative_zero_is_zero():
    p = np.array([[0.0, 0.3], [-0.0, 0.3], [0.5, 0.0]])
    t = np.array([[1, 1], [0, 0], [0, 1]])
    _same(evaluate(p, t), evaluate(np.abs(p), t))


# --- VOC interpolated AP ------------------------------------------------------

def test_voc_interpolated_hand_example():
    # ranks: + - + +  → precisions 1, 2/3, 3/4; the envelope lifts 2/3 to 3/4
    p = np.array([[0.9], [0.8], [0.7], [0.6]])
    t = np.array([[1], [0], [1], [1]])
    assert evaluate(p, t)["AP"][0] == pytest.approx(29 / 36, abs=1e-15)
    assert evaluate(p, t, ap="voc_interpolated")["AP"][0] == pytest.approx(5 / 6, abs=1e-15)


def _voc_devkit_ap(score, label):
    """All-point interpolated AP written after the VOC devkit 2010+ description."""
    order = np.argsort(-score, kind="stable")
    hit = label[order] == 1
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    rec, prec = tp / hit.sum(), tp / (tp + fp)
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1))


def test_voc_interpolated_matches_devkit_loop():
    p, t = _random(3, 150, 6, ignored=0.1)
    out = evaluate(p, t, ap="voc_interpolated")
    for c in range(6):
        keep = t[:, c] != -1
        assert out["AP"][c] == pytest.approx(_voc_devkit_ap(p[keep, c], t[keep, c]), abs=1e-12)
    assert all(v >= a - 1e-15 for v, a in zip(out["AP"], evaluate(p, t)["AP"]))


# --- threshold and top-k metrics on a hand fixture ----------------------------

P_FIX = np.array([[0.9, 0.6, 0.65],
                  [0.8, 0.4, 0.2],
                  [0.3, 0.7, 0.05],
                  [0.55, 0.2, 0.45]])
T_FIX = np.array([[1, 0, 1],
                  [1, 1, 0],
                  [0, 1, -1],
                  [-1, 0, 1]])


def _check_six(out, suffix, cp, cr, op, orr):
    """The six metrics from hand-derived CP, CR, OP, OR (F1s by their definition)."""
    want = [cp, cr, 2 * cp * cr / (cp + cr), op, orr, 2 * op * orr / (op + orr)]
    for key, value in zip(SIX, want):
        assert out[key + suffix] == pytest.approx(float(value), abs=1e-15), key + suffix


def test_threshold_and_topk_hand_counts():
    # prob >= 0.5, per class (Nc, Np, Ng): (2, 3, 2) (1, 2, 2) (1, 1, 2);
    # row 3 / class 0 is predicted with target -1: a false positive.
    out = evaluate(P_FIX, T_FIX, top_k=2)
    _check_six(out, "", F(13, 18), F(2, 3), F(4, 6), F(4, 6))
    assert out["CF1"] == pytest.approx(52 / 75, abs=1e-15)
    # top-2 AND >= 0.5: rows pick {0, 2}, {0}, {1}, {0} → (2, 3, 2) (1, 1, 2) (1, 1, 2)
    _check_six(out, "@2", F(8, 9), F(2, 3), F(4, 5), F(4, 6))
    # pure top-2: {0, 2}, {0, 1}, {1, 0}, {0, 2} → (2, 4, 2) (2, 2, 2) (2, 2, 2)
    pure = evaluate(P_FIX, T_FIX, top_k=2, topk_mode="pure")
    _check_six(pure, "@2", F(5, 6), F(1), F(6, 8), F(1))
    # AP: class 1 ranks + ... (0.7 +, 0.6 -, 0.4 +) → (1 + 2/3) / 2; -1 rows removed
    assert out["AP"] == pytest.approx([1.0, 5 / 6, 1.0], abs=1e-15)
    assert out["mAP"] == pytest.approx(17 / 18, abs=1e-15)


def test_never_predicted_class_gets_np_one():
    p = np.array([[0.9, 0.1], [0.2, 0.3]])
    t = np.array([[1, 1], [0, 1]])
    out = evaluate(p, t)
    # class 1 never predicted: Np = 1 → precision 0, and OP's denominator is 1 + 1
    assert out["CP"] == pytest.approx(0.5) and out["OP"] == pytest.approx(0.5)
    assert out["CR"] == pytest.approx(0.5) and out["OR"] == pytest.approx(1 / 3)


def test_threshold_metrics_match_sklearn_when_every_class_is_predicted():
    skm = pytest.importorskip("sklearn.metrics")
    p, t = _random(4, 400, 8, density=0.3, ignored=0.1)
    out = evaluate(p, t, threshold=0.3)
    y, yhat = t == 1, p >= 0.3
    assert yhat.any(axis=0).all()
    kw = dict(zero_division=0)
    assert out["CP"] == pytest.approx(skm.precision_score(y, yhat, average="macro", **kw))
    assert out["CR"] == pytest.approx(skm.recall_score(y, yhat, average="macro", **kw))
    assert out["OP"] == pytest.approx(skm.precision_score(y, yhat, average="micro", **kw))
    assert out["OR"] == pytest.approx(skm.recall_score(y, yhat, average="micro", **kw))
    assert out["OF1"] == pytest.approx(skm.f1_score(y, yhat, average="micro", **kw))


def test_cf1_is_at_least_mean_per_class_f1():
    strictly = 0
    for seed in range(20):
        p, t = _random(10 + seed, 60, 7, density=0.3)
        out = evaluate(p, t)
        pred, gt = p >= 0.5, t == 1
        nc = (pred & gt).sum(0)
        prec, rec = nc / np.maximum(pred.sum(0), 1), nc / np.maximum(gt.sum(0), 1)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
        assert out["CF1"] >= f1.mean() - 1e-12
        strictly += out["CF1"] > f1.mean() + 1e-9
    assert strictly > 10  # the two definitions really differ


def test_zero_division_guards():
    with pytest.warns(NoPositiveClassWarning):
        out = evaluate(np.array([[0.1, 0.2]]), np.array([[0, 0]]), top_k=1)
    assert out["CP"] == out["CR"] == out["CF1"] == 0.0
    assert out["OP"] == out["OR"] == out["OF1"] == 0.0
    assert out["OF1@1"] == 0.0


# --- edge cases -------------------------------------------------------------

def test_all_negative_class_is_left_out_with_warning():
    p, t = _random(5, 50, 4)
    t[:, 2] = np.where(t[:, 2] == 1, 0, t[:, 2])
    t[:, 3] = -1  # all ignored: no positive either
    with pytest.warns(NoPositiveClassWarning, match=r"2 of 4 classes .*indices 2, 3"):
        out = evaluate(p, t)
    assert math.isnan(out["AP"][2]) and math.isnan(out["AP"][3])
    assert out["n_classes_ap"] == 2
    assert out["mAP"] == pytest.approx(np.mean(out["AP"][:2]), abs=1e-15)
    with pytest.warns(NoPositiveClassWarning):
        none = evaluate(p, np.zeros_like(t))
    assert math.isnan(none["mAP"]) and none["n_classes_ap"] == 0


def test_all_positive_class_has_ap_one():
    p, t = _random(6, 40, 3, ties=True)
    t[:, 1] = 1
    for mode in ("noninterpolated", "voc_interpolated"):
        assert evaluate(p, t, ap=mode)["AP"][1] == 1.0


def test_single_sample():
    with pytest.warns(NoPositiveClassWarning):
        out = evaluate(np.array([[0.7, 0.2, 0.9]]), np.array([[1, 0, 1]]), top_k=1)
    assert out["AP"][0] == out["AP"][2] == 1.0 and math.isnan(out["AP"][1])
    # threshold: classes 0, 2 right, class 1 never predicted (Np = 1, Nc = 0, Ng = 0)
    assert out["CP"] == pytest.approx(2 / 3) and out["OP"] == pytest.approx(2 / 3)
    assert out["CR"] == pytest.approx(2 / 3) and out["OR"] == 1.0
    # top-1 keeps only class 2 (0.9)
    assert out["OP@1"] == pytest.approx(1 / 3) and out["OR@1"] == pytest.approx(0.5)


def test_ignored_targets_drop_from_ap_but_count_absent_elsewhere():
    p, t = _random(7, 80, 3)
    t2 = t.copy()
    t2[5:15, 1] = -1
    out = evaluate(p, t2)
    keep = t2[:, 1] != -1
    assert out["AP"][1] == evaluate(p[keep], t2[keep])["AP"][1]
    zeroed = np.where(t2 == -1, 0, t2)
    for k in SIX + [s + "@3" for s in SIX]:
        assert out[k] == evaluate(p, zeroed)[k]


def test_result_keys_and_types():
    out = evaluate(*_random(8, 30, 4), top_k=5)
    assert list(out) == ["mAP", "AP"] + SIX + [s + "@5" for s in SIX] + ["n_classes_ap"]
    assert isinstance(out["AP"], list) and len(out["AP"]) == 4
    assert all(type(out[k]) is float and 0.0 <= out[k] <= 1.0 for k in out
               if k not in ("AP", "n_classes_ap"))
    assert type(out["n_classes_ap"]) is int


# --- top-k selection ------------------------------------------------------------

def test_topk_ties_go_to_lower_class_index():
    p = np.array([[0.5, 0.9, 0.5, 0.5]])
    assert topk_mask(p, 2).tolist() == [[True, True, False, False]]
    p, _ = _random(9, 30, 12, ties=True)
    for k in range(1, 14):  # both the argmax (k <= 8) and the row-sort branch
        want = np.zeros_like(p, dtype=bool)
        for i, row in enumerate(p):
            want[i, sorted(range(12), key=lambda j: (-row[j], j))[:k]] = True
        np.testing.assert_array_equal(topk_mask(p, k), want, err_msg=f"k={k}")


def test_parallel_split_gives_identical_ap(monkeypatch):
    monkeypatch.setattr(core, "_PARALLEL_MIN_ENTRIES", 0)
    p, t = _random(11, 120, 7, ties=True, ignored=0.2)
    for mode in ("noninterpolated", "voc_interpolated"):
        one = average_precision(p, t, mode, threads=1)
        three = average_precision(p, t, mode, threads=3)
        np.testing.assert_array_equal(one[0], three[0])
        np.testing.assert_array_equal(one[1], three[1])
    monkeypatch.setenv("GMBENCH_METRIC_THREADS", "3")
    threaded = evaluate(p, t, ap="voc_interpolated")
    monkeypatch.setenv("GMBENCH_METRIC_THREADS", "1")
    _same(threaded, evaluate(p, t, ap="voc_interpolated"))


# --- input checks -----------------------------------------------------------------

GOOD_P, GOOD_T = np.full((3, 2), 0.5), np.zeros((3, 2))


@pytest.mark.parametrize("probs,targets,match", [
    (np.full(3, 0.5), np.zeros(3), r"2-D \[N, C\], got shape \(3,\).*reshape"),
    (np.full((2, 2, 2), 0.5), np.zeros((2, 2, 2)), r"2-D"),
    (GOOD_P, np.zeros((3, 3)), r"same shape.*\(3, 2\) and \(3, 3\)"),
    (np.zeros((0, 3)), np.zeros((0, 3)), r"empty.*\(0, 3\)"),
    (np.zeros((3, 0)), np.zeros((3, 0)), r"empty"),
    (np.array([[0.5, np.nan], [np.inf, 0.1]]), np.zeros((2, 2)),
     r"finite: 2 of 4 values \(first at \[0, 1\]: nan\)"),
    (np.array([[0.5, 2.3], [0.1, -1.0]]), np.zeros((2, 2)),
     r"\[0, 1\]: 2 of 4 values \(first at \[0, 1\]: 2.3\).*logits"),
    (GOOD_P, np.array([[0, 2], [1, 0], [0, 0]]), r"only 1.*0.*-1.*1 of 6 values.*\[0, 1\]: 2"),
    (GOOD_P, np.array([[0, 0.5], [1, 0], [0, 0]]), r"0.5"),
    (GOOD_P, np.array([[0, np.nan], [1, 0], [0, 0]]), r"nan"),
    (GOOD_P.astype(complex), GOOD_T, r"real numbers"),
    (np.array([[True, False]]), np.array([[1, 0]]), r"real numbers"),
])
def test_bad_inputs_raise_clear_errors(probs, targets, match):
    with pytest.raises(ValueError, match=match):
        evaluate(probs, targets)


def test_bad_types_and_options():
    with pytest.raises(TypeError, match="probs must be a numpy array or a torch tensor, got list"):
        evaluate([[0.5]], np.zeros((1, 1)))
    for kw, match in [({"threshold": 1.5}, "threshold"), ({"threshold": True}, "threshold"),
                      ({"top_k": 0}, "top_k"), ({"top_k": 2.0}, "top_k"),
                      ({"ap": "11point"}, "ap must be one of"),
                      ({"topk_mode": "exact"}, "topk_mode must be one of")]:
        with pytest.raises(ValueError, match=match):
            evaluate(GOOD_P, GOOD_T, **kw)
        with pytest.raises(ValueError, match=match):
            conventions(**kw)


def test_conventions_and_format_percent():
    conv = conventions(ap="voc_interpolated", topk_mode="pure", top_k=5, threshold=0.4)
    assert (conv["ap"], conv["topk_mode"], conv["top_k"], conv["threshold"]) == \
        ("voc_interpolated", "pure", 5, 0.4)
    json.dumps(conv)
    assert format_percent(0.8432) == "84.3"
    assert format_percent(np.float32(1.0)) == "100.0"
    assert format_percent(0.0) == "0.0"
    assert format_percent(0.84349, digits=2) == "84.35"
    assert format_percent(float("nan")) == "-" and format_percent(None) == "-"
