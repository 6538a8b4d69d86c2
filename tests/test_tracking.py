"""train.tensorboard: per-epoch scalars through torch.utils.tensorboard (optional extra)."""
import sys

import pytest

from gmbench.utils.tracking import MissingTensorBoard, open_writer
from test_recipes_engine import _plain_fit


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingTensorBoard, match=r"pip install 'gmbench\[tensorboard\]'"):
        open_writer(True, tmp_path)
    assert open_writer(False, tmp_path) is None


def test_scalars_per_epoch_match_the_history(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra gmbench[tensorboard] is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, res = _plain_fit(tmp_path, tmp_path / "ck", **{"train.tensorboard": True, "train.epochs": 2,
                                                       "train.ema": 0.5})
    acc = EventAccumulator(str(tmp_path / "ck" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "test/mAP", "test/OF1", "test_raw/mAP"} <= tags
    for tag, key in (("train/loss", "loss"), ("test/mAP", "mAP"), ("test_raw/mAP", "raw_mAP")):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in res["history"]]
        assert got == want, tag
