"""model.features=online (issue 15, item 1): the frozen detector runs on the (augmented) batch;
settings a mode ignores are recorded; the Eq. 15 reductions against a hand computation."""
import math

import numpy as np
import pytest
import torch

from gmbench.data.transforms import MEAN, STD
from types import SimpleNamespace

from gmbench.instances.source import detector_weights_file, open_sources
from gmbench.models.gm_mlic import GMMLICConfig, weighted_bce_from_logits
from test_gm_mlic import RATIOS, WORD, make_model


@pytest.fixture(scope="module")
def online_model():
    cfg = dict(features="online", feat_dim=1024, detector_weights="none", detector_min_size=64,
               detector_max_size=64, top_m=5, enc_dim=8, dims=[8, 6], backend="dense")
    model = make_model(**cfg)
    open_sources(model, SimpleNamespace(model=model.cfg, data=None), None)  # as the runner does
    return model


def test_online_mode_runs_the_detector_on_the_batch_images(online_model):
    model = online_model
    assert model.needs_images and not model.needs_boxes and not model.needs_instance_features
    assert not any("detector" in k or "rpn" in k for k in model.state_dict())  # not checkpointed
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(3, 3, 64, 64, generator=g)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    img = (raw - mean) / std
    boxes, mask, feats = model._extractor(img)
    assert feats.shape[-1] == 1024 and mask.any(1).all() and mask.sum(1).max() <= 5
    assert boxes[mask].min() >= 0 and boxes[mask].max() <= 1
    # The same detector on the un-normalised image (its own input), mapped back by hand.
    det = model._extractor.model
    out = det([raw[0]])[0]
    np.testing.assert_allclose(boxes[0, :mask[0].sum()].numpy(), (out["boxes"] / 64).numpy()[:5],
                               rtol=1e-4, atol=1e-4)
    batch = {"image": img, "target": torch.ones(3, len(WORD))}
    res = model(batch)
    assert res["probs"].shape == (3, len(WORD)) and torch.isfinite(model.loss(res, batch))
    # The instances follow the augmentation: a flipped image gives other features.
    flipped = model._extractor(img.flip(-1))[2]
    assert not torch.allclose(flipped[:, :1], feats[:, :1])
    assert model.describe()["instance_extractor"]["mode"] == "online"


def test_online_needs_an_attached_detector():
    model = make_model(features="online", enc_dim=8, dims=[8, 6])
    with pytest.raises(RuntimeError, match="no detector attached"):
        model({"image": torch.zeros(1, 3, 32, 32), "target": torch.zeros(1, len(WORD))})
    with pytest.raises(ValueError, match="features=online"):
        make_model(enc_dim=8, dims=[8, 6]).attach_instance_extractor(object())


def test_settings_a_mode_ignores_are_recorded_as_unused():
    cache = make_model(enc_dim=8, dims=[8, 6], depth=50, pretrained="imagenet")
    rec = cache.describe()["unused_settings"]
    assert rec["depth"] == 50 and rec["pretrained"] == "imagenet" and "roi_size" in rec
    assert "feat_dim" not in rec and "detector_weights" in rec
    e2e = GMMLICConfig(features="e2e", depth=18, pretrained="none")
    from gmbench.models.gm_mlic.config import unused_settings
    assert "feat_dim" in unused_settings(e2e) and "depth" not in unused_settings(e2e)
    assert detector_weights_file(e2e.instance_settings()) is None
    online = GMMLICConfig(features="online", detector_weights="/x/w.pth")
    assert detector_weights_file(online.instance_settings()).name == "w.pth"


def test_loss_reductions_against_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]])
    ratios = torch.tensor([0.2, 0.5, 0.1])
    beta = 0.4
    terms = []
    for i in range(2):
        for c in range(3):
            y = float(target[i, c])
            if y < 0:
                continue
            p = 1 / (1 + math.exp(-float(logits[i, c])))
            w = math.exp(beta * (1 - float(ratios[c]))) if y == 1 else math.exp(beta * float(ratios[c]))
            terms.append(-w * (y * math.log(p) + (1 - y) * math.log(1 - p)))
    want = {"sum": sum(terms), "mean": sum(terms) / len(terms), "sum_classes": sum(terms) / 2}
    for red, v in want.items():
        got = weighted_bce_from_logits(logits, target, ratios, beta, red)
        assert float(got) == pytest.approx(v, rel=1e-6), red
    model = make_model(enc_dim=8, dims=[8, 6])
    assert model.cfg.loss_reduction == "sum_classes" == model.describe()["loss_reduction"]
    with pytest.raises(ValueError, match="reduction"):
        weighted_bce_from_logits(logits, target, ratios, beta, "avg")
    assert RATIOS.shape == (len(WORD),)
