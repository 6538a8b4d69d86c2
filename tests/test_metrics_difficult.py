"""eval.difficult (issue 15, item 5): VOC difficult labels (-1) ignored vs counted as negatives,
against scikit-learn on hand-built columns."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from gmbench.config import EvalConfig
from gmbench.metrics.core import conventions, evaluate


def test_difficult_negative_matches_sklearn_with_zeros_and_ignore_drops_them():
    rng = np.random.default_rng(0)
    p = rng.random((60, 4))
    t = (rng.random((60, 4)) < 0.3).astype(np.int8)
    t[rng.random((60, 4)) < 0.15] = -1
    t[0] = 1
    ign = evaluate(p, t, difficult="ignore")
    neg = evaluate(p, t, difficult="negative")
    for c in range(4):
        keep = t[:, c] >= 0
        assert ign["AP"][c] == pytest.approx(average_precision_score(t[keep, c], p[keep, c]))
        assert neg["AP"][c] == pytest.approx(average_precision_score(t[:, c] == 1, p[:, c]))
    assert neg["mAP"] != pytest.approx(ign["mAP"])
    assert evaluate(p, t)["mAP"] == ign["mAP"]            # default stays "ignore"


def test_difficult_setting_is_validated_and_recorded():
    with pytest.raises(ValueError, match="difficult must be one of"):
        evaluate(np.zeros((2, 1)), np.ones((2, 1)), difficult="positive")
    assert conventions(difficult="negative")["difficult"] == "negative"
    assert EvalConfig().difficult == "ignore"
    with pytest.raises(Exception):
        EvalConfig(difficult="drop")
