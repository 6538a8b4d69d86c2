"""Recipe parts (gmbench.recipes), parametrised over their registries: a new loss,
optimizer or schedule is tested here without a test change."""
import math

import pytest
import torch

from gmbench import config as C
from gmbench import recipes
from gmbench.recipes.losses import asymmetric_loss

CFG = C.LossConfig()


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_asl_matches_a_hand_computed_example():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.0]])
    target = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    gn, gp, clip = 4.0, 1.0, 0.05
    terms = []  # one scalar per non-ignored entry, written out from the paper's definition
    for x, y in ((2.0, 1), (-1.0, 0), (-3.0, 0), (0.2, 1), (1.0, 0)):
        p = _sig(x)
        if y == 1:
            terms.append(-((1 - p) ** gp) * math.log(p))
        else:
            pm = max(p - clip, 0.0)
            terms.append(-(pm ** gn) * math.log(1 - pm))
    want = sum(terms) / len(terms)
    got = asymmetric_loss(logits, target, gn, gp, clip).item()
    assert got == pytest.approx(want, rel=1e-6)


def test_asl_equals_timm_sum_where_nothing_is_ignored():
    from timm.loss import AsymmetricLossMultiLabel
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g) * 3
    y = (torch.rand(4, 6, generator=g) < 0.4).float()
    ref = AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8, reduction="mean")(x, y)
    assert asymmetric_loss(x, y, 4.0, 1.0, 0.05).item() == pytest.approx(ref.item(), rel=1e-5)


def test_focal_equals_torchvision_sigmoid_focal_loss():
    from torchvision.ops import sigmoid_focal_loss
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=g) * 2
    y = (torch.rand(3, 5, generator=g) < 0.5).float()
    cfg = C.LossConfig(name="focal", gamma=2.0, alpha=0.25)
    fn = recipes.LOSSES.get("focal").fn(cfg, None)
    ref = sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="mean")
    assert fn(x, y).item() == pytest.approx(ref.item(), rel=1e-5)


class _Ratios(torch.nn.Module):
    ratios = torch.tensor([0.1, 0.5, 0.3, 0.9])


@pytest.mark.parametrize("name", recipes.LOSSES.names())
def test_every_loss_ignores_minus_one_and_runs_in_float32(name):
    fn = recipes.build_loss(C.LossConfig(name=name), _Ratios())
    x = torch.randn(3, 4)
    t = torch.tensor([[1.0, 0, -1, 1], [0, -1, 0, 1], [-1, 1, 1, 0]])
    base = fn({"logits": x}, {"target": t})
    x2 = torch.where(t < 0, x + 100.0, x)  # only ignored entries change
    assert fn({"logits": x2}, {"target": t}).item() == pytest.approx(base.item(), rel=1e-6)
    assert fn({"logits": x + (t >= 0) * 1.0}, {"target": t}).item() != pytest.approx(base.item())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn({"logits": x.bfloat16()}, {"target": t})
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_weighted_bce_needs_ratios():
    with pytest.raises(ValueError, match="label ratios"):
        recipes.build_loss(C.LossConfig(name="weighted_bce"), torch.nn.Linear(2, 2))


def test_unknown_recipe_names_are_config_errors():
    for key, bad in (("loss.name", "asll"), ("optim.name", "adamx"), ("optim.scheduler", "cosin")):
        with pytest.raises(C.ConfigError, match=bad):
            C.validate(C.compose("resnet", "synthetic", C.parse_set([f"{key}={bad}"])))


def test_ema_update_follows_the_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = recipes.ModelEma(model, 0.9)
    e0 = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(5, 3))  # moves BN running stats and num_batches_tracked
    ema.update(model)
    for k, v in model.state_dict().items():
        e = ema.module.state_dict()[k]
        if v.is_floating_point():
            assert torch.allclose(e, 0.9 * e0[k] + 0.1 * v, atol=1e-7), k
        else:
            assert torch.equal(e, v), k
    assert not ema.module.training


class _Net(torch.nn.Module):
    """backbone (conv + BN) and head, like an MLICModel's param_groups expect."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        self.fc = torch.nn.Linear(4, 2)

    from gmbench.models.base import MLICModel
    param_groups = MLICModel.param_groups


@pytest.mark.parametrize("name", recipes.OPTIMIZERS.names())
@pytest.mark.parametrize("no_decay", [False, True])
def test_optimizer_groups_keep_backbone_lr_and_drop_decay_on_norms_and_biases(name, no_decay):
    cfg = C.OptimConfig(name=name, lr=0.1, backbone_lr_mult=0.1, weight_decay=1e-3,
                        no_decay_norm_bias=no_decay)
    net = _Net()
    opt = recipes.build_optimizer(net, cfg)
    seen = {}
    for g in opt.param_groups:
        for p in g["params"]:
            seen[id(p)] = (g["lr"], g["weight_decay"])
    assert len(seen) == sum(1 for _ in net.parameters())
    for mod, lr in ((net.backbone, 0.01), (net.fc, 0.1)):
        for p in mod.parameters():
            assert seen[id(p)][0] == pytest.approx(lr)
            assert seen[id(p)][1] == (0.0 if (no_decay and p.ndim <= 1) else 1e-3)


def _lrs(name, n, spe=4, epochs=3, **kw):
    net = _Net()
    cfg = C.OptimConfig(name="sgd", lr=0.1, scheduler=name, **kw)
    opt = recipes.build_optimizer(net, cfg)
    sch = recipes.build_scheduler(opt, cfg, spe, epochs)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out, opt, sch, cfg, net


def test_step_schedule_per_iteration_equals_epoch_stepped_steplr():
    got, *_ = _lrs("step", 12, step_size=1, gamma=0.5)
    assert got == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)
    got, *_ = _lrs("multistep", 12, milestones=[2], gamma=0.1)
    assert got == pytest.approx([0.1] * 8 + [0.01] * 4)


def test_cosine_warmup_and_onecycle_shapes():
    got, *_ = _lrs("cosine", 12, warmup_epochs=0.5)  # W = 2 iterations
    t = [i / 12 for i in range(12)]
    want = [0.1 * 0.5 * (1 + math.cos(math.pi * x)) for x in t]
    want[0] *= 0.5
    assert got == pytest.approx(want)
    got, *_ = _lrs("onecycle", 12, warmup_epochs=1)  # peak after 1 of 3 epochs
    peak = max(range(12), key=got.__getitem__)
    assert got[peak] == pytest.approx(0.1) and 3 <= peak <= 4
    assert got[0] == pytest.approx(0.1 / 25) and got[-1] < got[0]


@pytest.mark.parametrize("name", recipes.SCHEDULES.names())
def test_every_schedule_resumes_exactly_from_its_state_dict(name):
    ref, *_ = _lrs(name, 12, milestones=[1], step_size=1, warmup_epochs=0.5)
    _, opt, sch, cfg, net = _lrs(name, 5, milestones=[1], step_size=1, warmup_epochs=0.5)
    state_o, state_s = opt.state_dict(), sch.state_dict()
    opt2 = recipes.build_optimizer(net, cfg)
    sch2 = recipes.build_scheduler(opt2, cfg, 4, 3)
    opt2.load_state_dict(state_o)
    sch2.load_state_dict(state_s)
    rest = []
    for _ in range(7):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sch2.step()
    assert rest == ref[5:]
