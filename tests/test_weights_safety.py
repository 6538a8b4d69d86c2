"""Issue 13, item 9: a file planted in the torch hub cache is never unpickled.

Every place gmbench reads torchvision enum weights (a ResNet trunk, the detector's
ResNet-FPN trunk, the COCO Faster R-CNN) goes through ``gmbench.models.weights``:
hash prefix checked, then ``torch.load(weights_only=True)``.
"""
import builtins

import pytest
import torch
import torchvision
import yaml
from torchvision.models import ResNet18_Weights
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
from torchvision.ops import misc as misc_nn_ops

from conftest import tiny_sets
from gmbench.cli import main
from gmbench.models import weights as W
from gmbench.models.backbone import build_resnet, load_state_dict_file


class Boom:
    """Unpickling this calls open(marker, "w"): the file appears iff a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    d = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(d))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("no network in tests")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    (d / "checkpoints").mkdir(parents=True)
    return d / "checkpoints"


def no_hash_check(monkeypatch):
    """A planted file whose sha256 matches the name's prefix (8 hex digits can be forged)."""
    monkeypatch.setattr(W, "hash_prefix", lambda name: None)


def plant(path, marker):
    torch.save({"conv1.weight": Boom(marker)}, path)
    assert not marker.exists()


def _resnet():
    build_resnet(18, "imagenet")


def _detector_trunk():
    from gmbench.detector.model import resnet_fpn
    resnet_fpn("resnet18", 64, 0, misc_nn_ops.FrozenBatchNorm2d, ResNet18_Weights.IMAGENET1K_V1)


def _coco_detector():
    from gmbench.instances.extract import _weights_state
    _weights_state("coco")


CALLERS = [(_resnet, ResNet18_Weights.IMAGENET1K_V1),
           (_detector_trunk, ResNet18_Weights.IMAGENET1K_V1),
           (_coco_detector, FasterRCNN_ResNet50_FPN_Weights.COCO_V1)]


@pytest.mark.parametrize("forged_hash", [False, True], ids=["hash", "forged-hash"])
@pytest.mark.parametrize("build,enum", CALLERS, ids=["resnet", "detector-trunk", "coco-detector"])
def test_planted_pickle_never_runs(hub, tmp_path, monkeypatch, build, enum, forged_hash):
    marker = tmp_path / "pwned"
    path = hub / W.hub_weights_path(enum).name
    plant(path, marker)
    if forged_hash:
        no_hash_check(monkeypatch)
    with pytest.raises(W.WeightsError) as e:
        build()
    assert not marker.exists()
    msg = str(e.value)
    assert str(path) in msg and "Delete" in msg
    assert ("weights_only=True" if forged_hash else "sha256") in msg


def test_a_planted_local_file_never_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "w.pth"
    plant(path, marker)
    with pytest.raises(W.WeightsError, match="w.pth cannot be loaded as plain tensors"):
        load_state_dict_file(str(path))
    assert not marker.exists()


def test_a_genuine_state_dict_loads_exactly(hub, monkeypatch):
    src = torchvision.models.resnet18(weights=None).state_dict()
    path = hub / W.hub_weights_path(ResNet18_Weights.IMAGENET1K_V1).name
    torch.save(src, path)
    # Not torchvision's bytes, so its sha256 cannot match the name: refused as such ...
    with pytest.raises(W.WeightsError, match="is not torchvision's ResNet18_Weights.IMAGENET1K_V1"):
        build_resnet(18, "imagenet")
    # ... and read exactly once the hash check is out of the way.
    no_hash_check(monkeypatch)
    trunk, out_ch, rec = build_resnet(18, "imagenet")
    assert out_ch == 512 and rec["weights"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    got = trunk.state_dict()
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    for k, v in got.items():
        i, rest = k.split(".", 1)
        assert torch.equal(v, src[f"{names[int(i)]}.{rest}"]), k


class FakeWeights:
    name = "V1"

    def __init__(self, url):
        self.url = url


def test_hash_prefix_in_the_name_is_checked_and_a_download_is_used(hub, monkeypatch):
    src = {"w": torch.arange(4.0)}
    tmp = hub / "x.pth"
    torch.save(src, tmp)
    digest = W._sha256(tmp)
    enum = FakeWeights(f"https://example.org/models/thing-{digest[:10]}.pth")
    tmp.rename(W.hub_weights_path(enum))
    assert torch.equal(W.hub_state_dict(enum)["w"], src["w"])

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save(src, dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    other = FakeWeights("https://example.org/models/other.pth")  # no hash in the name
    assert torch.equal(W.hub_state_dict(other)["w"], src["w"])
    assert calls == [(other.url, None)] and W.hub_weights_path(other).is_file()
    W.hub_state_dict(other)
    assert len(calls) == 1  # found in the cache the second time


def test_absent_file_offline_and_non_tensor_entries_are_clean_errors(hub, monkeypatch):
    enum = ResNet18_Weights.IMAGENET1K_V1
    with pytest.raises(W.WeightsError, match="download from .* failed .*Copy that file"):
        W.hub_state_dict(enum)
    no_hash_check(monkeypatch)
    torch.save({"conv1.weight": torch.zeros(1), "note": "hi"}, W.hub_weights_path(enum))
    with pytest.raises(W.WeightsError, match="entry 'note' is not a tensor"):
        W.hub_state_dict(enum)
    torch.save([torch.zeros(1)], W.hub_weights_path(enum))
    with pytest.raises(W.WeightsError, match="holds a list, not a state dict"):
        W.hub_state_dict(enum)


def test_run_with_a_planted_hub_file_exits_1_with_one_line(hub, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    plant(hub / W.hub_weights_path(ResNet18_Weights.IMAGENET1K_V1).name, marker)
    no_hash_check(monkeypatch)
    suite = tmp_path / "w.yaml"
    suite.write_text(yaml.safe_dump({"name": "w", "seeds": [0], "rows": [
        {"label": "R", "method": "resnet", "dataset": "synthetic"}],
        "defaults": {"model": {"depth": 18, "pretrained": "imagenet"}}}))
    sets = [x for s in tiny_sets() for x in ("--set", s)]
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "out")] + sets) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot be loaded as plain tensors" in lines[0]
    assert "Traceback" not in err and not marker.exists()
