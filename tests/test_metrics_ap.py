"""The bucketed AP (gmbench/metrics/ap.py) on score layouts that stress its two paths.

Negatives in a bucket without a positive are counted per bucket; the rest are
binary-searched. Heavy ties, tiny or clustered scores and a single distinct score
push most negatives onto the search path; the answers must not change.
"""
from __future__ import annotations

import numpy as np
import pytest

from gmbench.metrics import ap as ap_mod
from gmbench.metrics import evaluate
from gmbench.metrics.core import at_least

torch = pytest.importorskip("torch")


def _layout(name, rng, n, c):
    u = rng.random((n, c))
    if name == "uniform":
        return u
    if name == "near_zero":  # spans many binades down to subnormal float32
        return u ** 40
    if name == "near_one":
        return 1.0 - 1e-6 * u ** 3
    if name == "bf16":  # what an autocast model hands over: 8-bit mantissas
        return torch.from_numpy(u).to(torch.bfloat16).double().numpy()
    if name == "two_values":
        return np.where(u < 0.5, 0.25, 0.75)
    if name == "one_value":
        return np.full((n, c), 0.5)
    if name == "saturated":
        return np.where(u < 0.3, 1.0, np.where(u > 0.9, 0.0, u))
    raise KeyError(name)


LAYOUTS = ["uniform", "near_zero", "near_one", "bf16", "two_values", "one_value", "saturated"]


def _sklearn_ap(p, t):
    skm = pytest.importorskip("sklearn.metrics")
    out = []
    for k in range(p.shape[1]):
        keep = t[:, k] != -1
        out.append(skm.average_precision_score(t[keep, k] == 1, p[keep, k]))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bucketed_ap_matches_sklearn(layout, dtype):
    rng = np.random.default_rng(LAYOUTS.index(layout))
    n, c = 400, 6
    p = _layout(layout, rng, n, c).astype(dtype)
    t = (rng.random((n, c)) < np.linspace(0.01, 0.9, c)).astype(np.int8)
    t[rng.random((n, c)) < 0.1] = -1
    t[0] = 1
    ap, n_pos = ap_mod.average_precision_block(p, t, "noninterpolated")
    np.testing.assert_allclose(ap, _sklearn_ap(p, t), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(n_pos, (t == 1).sum(0))


@pytest.mark.parametrize("oversample", [1, 64])
def test_bucket_resolution_changes_nothing(monkeypatch, oversample):
    rng = np.random.default_rng(3)
    p = _layout("bf16", rng, 500, 5).astype(np.float32)
    t = (rng.random((500, 5)) < 0.2).astype(np.int8)
    t[0] = 1
    ref = [ap_mod.average_precision_block(p, t, m)[0] for m in ("noninterpolated", "voc_interpolated")]
    monkeypatch.setattr(ap_mod, "OVERSAMPLE", oversample)
    for m, want in zip(("noninterpolated", "voc_interpolated"), ref):
        np.testing.assert_array_equal(ap_mod.average_precision_block(p, t, m)[0], want)


def test_float32_and_float64_of_the_same_scores_agree_exactly():
    rng = np.random.default_rng(4)
    p32 = _layout("near_zero", rng, 300, 4).astype(np.float32)
    t = (rng.random((300, 4)) < 0.3).astype(np.int8)
    t[0] = 1
    for thr in (0.5, 0.7, 0.1, 1 / 3):
        a, b = evaluate(p32, t, threshold=thr), evaluate(p32.astype(np.float64), t, threshold=thr)
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_float32_threshold_is_not_rounded():
    # float32(0.7) = 0.69999998..., below 0.7: it must not count as predicted at 0.7,
    # although numpy 1.x would compare against 0.7 rounded to float32 (the same value).
    x = np.float32(0.7)
    assert float(x) < 0.7
    p = np.array([[x, np.nextafter(x, np.float32(1))]], dtype=np.float32)
    assert at_least(p, 0.7).tolist() == [[False, True]]
    assert at_least(p.astype(np.float64), 0.7).tolist() == [[False, True]]
    assert at_least(p, float(x)).tolist() == [[True, True]]
