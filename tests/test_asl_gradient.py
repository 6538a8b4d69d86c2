"""ASL's gradient (issue 25 item 1): with ``loss.focal_grad: false`` (the authors' default)
the focusing weights are constants, as ``disable_torch_grad_focal_loss=True`` in the ASL,
ML-Decoder and Query2Label code. Checked against a re-derivation written here from the
paper's formula, a hand derivative, and timm's AsymmetricLossMultiLabel."""
import math

import pytest
import torch

from gmbench import config as C
from gmbench import recipes

GN, GP, CLIP = 4.0, 1.0, 0.05


def _batch(seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(4, 6, generator=g) < 0.4).double()
    if ignore:
        y[0, 0] = y[2, 3] = -1.0
    return x, y


def _reference(x, y, gn, gp, clip):
    """The paper's ASL, mean over non-ignored entries, with the weights (1−p)^γ+ and
    p_m^γ− computed from a detached copy of the logits (so autograd sees them as constants)."""
    valid = (y >= 0).double()
    t = y.clamp(min=0)
    p = torch.sigmoid(x)
    p_const = torch.sigmoid(x.detach())
    pm = (p - clip).clamp(min=0)
    pm_const = (p_const - clip).clamp(min=0)
    pos = -((1 - p_const) ** gp) * torch.log(p)
    neg = -(pm_const ** gn) * torch.log(1 - pm)
    return ((t * pos + (1 - t) * neg) * valid).sum() / valid.sum()


def _grad(fn, x, y):
    x = x.clone().requires_grad_(True)
    value = fn(x, y)
    value.backward()
    return value.detach(), x.grad


def _gmbench(focal_grad, reduction="mean", gn=GN, gp=GP, clip=CLIP):
    cfg = C.LossConfig(name="asl", gamma_neg=gn, gamma_pos=gp, clip=clip, reduction=reduction,
                       focal_grad=focal_grad)
    loss = recipes.build_loss(cfg, None)
    # build_loss computes in float32; the test keeps float64 inputs for the comparison
    return lambda x, y: loss({"logits": x}, {"target": y}).double()


def test_gradient_equals_the_reference_with_the_weight_detached():
    x, y = _batch()
    v_ref, g_ref = _grad(lambda a, b: _reference(a, b, GN, GP, CLIP), x, y)
    v, g = _grad(_gmbench(False), x, y)
    assert v.item() == pytest.approx(v_ref.item(), rel=1e-5)
    assert torch.allclose(g, g_ref, atol=1e-6, rtol=1e-4), (g - g_ref).abs().max()
    assert (g[y < 0] == 0).all()


def test_the_differentiated_weight_fails_the_gradient_test():
    """The old behaviour (focal_grad true) has the same value but another gradient: the
    test above would catch it."""
    x, y = _batch()
    v_ref, g_ref = _grad(lambda a, b: _reference(a, b, GN, GP, CLIP), x, y)
    v, g = _grad(_gmbench(True), x, y)
    assert v.item() == pytest.approx(v_ref.item(), rel=1e-5)
    assert (g - g_ref).abs().max() > 1e-3


def test_one_negative_and_one_positive_derivative_by_hand():
    """d/dx of −p_m^γ·log(1 − p_m) with p_m^γ constant is p_m^γ · p(1 − p)/(1 − p_m);
    of −(1 − p)^γ+·log p with the weight constant, −(1 − p)^γ+ · (1 − p); both / N."""
    x = torch.tensor([[1.3, -0.4, 0.7]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    _, g = _grad(_gmbench(False), x, y)
    n = 2
    p = 1 / (1 + math.exp(-1.3))
    pm = p - CLIP
    assert g[0, 0].item() == pytest.approx(pm ** GN * p * (1 - p) / (1 - pm) / n, rel=1e-5)
    q = 1 / (1 + math.exp(0.4))
    assert g[0, 1].item() == pytest.approx(-((1 - q) ** GP) * (1 - q) / n, rel=1e-5)
    assert g[0, 2].item() == 0.0


@pytest.mark.parametrize("focal_grad", [False, True])
def test_value_and_gradient_equal_timm_with_the_same_switch(focal_grad):
    from timm.loss import AsymmetricLossMultiLabel
    x, y = _batch(seed=1, ignore=False)
    ref = AsymmetricLossMultiLabel(gamma_neg=GN, gamma_pos=GP, clip=CLIP, eps=1e-8, reduction="sum",
                                   disable_torch_grad_focal_loss=not focal_grad)
    v_ref, g_ref = _grad(ref, x, y)
    v, g = _grad(_gmbench(focal_grad, reduction="sum"), x, y)
    assert v.item() == pytest.approx(v_ref.item(), rel=1e-5)
    assert torch.allclose(g, g_ref, atol=1e-5, rtol=1e-4), (g - g_ref).abs().max()


def test_the_authors_recipes_switch_it_off_and_the_generic_default_is_off():
    for method in ("asl", "ml_decoder", "q2l"):
        doc = C.load_yaml(C.config_root() / "methods" / f"{method}.yaml")
        assert doc["loss"]["focal_grad"] is False, method
    assert C.LossConfig().focal_grad is False
