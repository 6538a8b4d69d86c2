"""timm backbones (model.backbone: timm/<name>): random init, local weight files, the
feature map in ResNet-style, spatial (SSGRL) and GM-MLIC end-to-end heads. No downloads."""
import pytest
import torch

from gmbench import config as C
from gmbench.models.backbone import build_backbone, build_timm
from gmbench.registry import METHODS
from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info

timm = pytest.importorskip("timm")
SMALL = "timm/resnet10t"  # ~5M parameters, random init


@pytest.mark.parametrize("method, extra", [
    ("resnet", {}), ("ml_gcn", {}), ("ssgrl", {"freeze_backbone": "none"}),
    ("gm_mlic", {"features": "e2e", "top_m": 3})])
def test_timm_backbone_inside_method_heads(method, extra):
    torch.manual_seed(0)
    cfg = METHODS.get(method).config.model_validate(
        {"name": method, "backbone": SMALL, "pretrained": "none", **extra})
    model = METHODS.get(method).fn(cfg, tiny_info())
    assert model.describe()["backbone"] == SMALL
    batch = tiny_batch(model, b=2, size=64)
    out = model(batch)
    assert out["logits"].shape == (2, NUM_CLASSES)
    model.loss(out, batch).backward()
    trunk_grads = [p.grad for p in model.backbone.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in trunk_grads)


def test_feature_map_matches_timm_forward_features_and_vit_tokens_become_a_grid():
    torch.manual_seed(0)
    trunk, width, _ = build_timm(SMALL)
    x = torch.randn(2, 3, 64, 64)
    trunk.eval()
    ref = trunk.net.forward_features(x)
    assert torch.equal(trunk(x), ref) and width == ref.shape[1] == 512 and ref.shape[-1] == 2
    vit, width, _ = build_timm("timm/vit_tiny_patch16_224")
    vit.net.patch_embed.strict_img_size = False
    vit.eval()
    grid = vit(torch.randn(1, 3, 224, 224))
    assert grid.shape == (1, width, 14, 14)
    tokens = vit.net.forward_features(torch.randn(1, 3, 224, 224))
    assert tokens.shape[1] == 14 * 14 + vit.net.num_prefix_tokens


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_local_weight_files_load_and_a_wrong_file_is_named(tmp_path, fmt):
    torch.manual_seed(1)
    src = timm.create_model("resnet10t", pretrained=False)  # with its classifier, as published
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(src.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    trunk, _, rec = build_timm(SMALL, str(path))
    assert rec["weights"].startswith("file:")
    for k, v in trunk.net.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not fit"):
        build_timm(SMALL, str(bad))


def test_backbone_names_are_validated():
    with pytest.raises(C.ConfigError, match="resnet10tt"):
        C.validate(C.compose("resnet", "synthetic", {"model": {"backbone": "timm/resnet10tt"}}))
    with pytest.raises(C.ConfigError, match="timm/<model name>"):
        C.validate(C.compose("resnet", "synthetic", {"model": {"backbone": "resnet10t"}}))
    with pytest.raises(C.ConfigError, match="freeze_backbone=none"):
        C.validate(C.compose("ssgrl", "synthetic", {"model": {"backbone": SMALL}}))
    with pytest.raises(ValueError, match="does not download"):
        build_backbone(METHODS.get("resnet").config(backbone=SMALL, pretrained="imagenet"))
