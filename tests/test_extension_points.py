"""Every extension point is one file (issue 23): losses, optimizers, schedules and augmentation
presets register with their own typed settings, the ``loss:``/``optim:`` blocks are built
from them, and ``gmbench list`` shows them. Parametrised over the registries, timm style."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel, Field
from torchvision import tv_tensors

from gmbench import config as C
from gmbench import recipes
from gmbench.data.transforms import build_transform
from gmbench.models.base import MLICModel
from gmbench.recipes.settings import LossCommon, block_model
from gmbench.registry import AUGMENTATIONS, LOSSES, OPTIMIZERS, SCHEDULES, Registry

ROOT = Path(__file__).resolve().parents[1]


class _Net(torch.nn.Module):
    """A backbone and a head, with the label ratios weighted_bce reads."""
    ratios = torch.tensor([0.1, 0.5, 0.3])
    param_groups = MLICModel.param_groups

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(5, 4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.fc(torch.relu(self.backbone(x)))}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_builds_with_its_defaults_and_trains_one_step(name):
    torch.manual_seed(0)
    net = _Net()
    loss = recipes.build_loss(C.LossConfig(name=name), net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.clone() for p in net.parameters()]
    value = loss(net(torch.randn(4, 5)), {"target": torch.tensor([[1.0, 0, -1]] * 4)})
    value.backward()
    opt.step()
    assert torch.isfinite(value) and any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("scheduler", SCHEDULES.names())
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_and_schedule_builds_with_its_defaults_and_steps(name, scheduler):
    net = _Net()
    cfg = C.OptimConfig(name=name, scheduler=scheduler)
    opt = recipes.build_optimizer(net, cfg)
    sch = recipes.build_scheduler(opt, cfg, steps_per_epoch=2, epochs=2)
    net(torch.randn(2, 5))["logits"].sum().backward()
    before = net.fc.weight.clone()
    opt.step()
    sch.step()
    assert not torch.equal(before, net.fc.weight)
    assert all(g["lr"] > 0 for g in opt.param_groups)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("preset", AUGMENTATIONS.names())
def test_every_preset_builds_with_its_defaults_and_transforms_one_image_with_a_box(preset, train):
    arr = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    box = tv_tensors.BoundingBoxes(torch.tensor([[5.0, 6.0, 30.0, 40.0]]), format="XYXY", canvas_size=(50, 70))
    torch.manual_seed(0)
    out, b = build_transform(preset, 32, train)(Image.fromarray(arr), box)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert ((b >= 0) & (b <= 32)).all()


def test_each_entry_brings_its_own_settings_into_the_blocks():
    for reg, block in ((LOSSES, C.LossConfig), (OPTIMIZERS, C.OptimConfig), (SCHEDULES, C.OptimConfig)):
        for name in reg.names():
            for key in reg.settings_keys(name):
                assert key in block.model_fields, (reg.kind, name, key)
    assert set(C.LossConfig.model_fields) == {"name", "reduction", "gamma_neg", "gamma_pos", "clip",
                                              "focal_grad", "gamma", "alpha", "beta"}
    assert LOSSES.get("weighted_bce").fn.__module__ == "gmbench.models.gm_mlic.loss"


def test_a_new_loss_is_one_registration_with_its_settings():
    reg = Registry("loss", block="test_new_loss")

    class HingeSettings(BaseModel):
        margin: float = Field(1.0, gt=0)

    reg.register("hinge", config=HingeSettings)(lambda cfg, model: None)
    model = block_model("T", LossCommon, reg)
    assert model(name="bce").margin == 1.0
    with pytest.raises(ValueError, match="margin"):
        model(name="bce", margin=-1)


def test_two_entries_declaring_one_key_differently_fail_at_registration():
    reg = Registry("loss", block="loss")  # the real loss: block's keys

    class Clash(BaseModel):
        gamma_neg: float = Field(2.0, ge=0)  # asl declares 4.0

    with pytest.raises(ValueError, match=r"loss.gamma_neg.*asl"):
        reg.register("clash", config=Clash)(lambda cfg, model: None)

    class Same(BaseModel):
        focal_grad: bool = False  # as asl and focal declare it

    reg.register("same", config=Same)(lambda cfg, model: None)


def test_a_setting_named_like_a_common_key_fails():
    reg = Registry("loss", block="test_common_clash")

    class Shadow(BaseModel):
        reduction: str = "sum"

    reg.register("shadow", config=Shadow)(lambda cfg, model: None)
    with pytest.raises(ValueError, match="reduction.*common"):
        block_model("T", LossCommon, reg)


@pytest.mark.parametrize("key, value, expect", [
    ("loss.gama_neg", 1, ["'loss.gama_neg'", "Did you mean 'gamma_neg'", "focal_grad"]),
    ("optim.momentun", 0.5, ["'optim.momentun'", "Did you mean 'momentum'", "min_lr_ratio"]),
    ("loss.gamma_neg", -1, ["'loss.gamma_neg'", "0 <= gamma_neg", "-1"]),
    ("optim.betas", [0.9], ["'optim.betas'", "two numbers"]),
    ("data.train_transform", "asl_cutot", ["asl_cutout", "csra"]),
])
def test_bad_keys_and_values_are_named_with_the_valid_ones(key, value, expect):
    raw = C.compose("resnet", "synthetic", C.dotted_to_nested({key: value}))
    with pytest.raises(C.ConfigError) as e:
        C.validate(raw)
    for text in expect:
        assert text in str(e.value), str(e.value)


def test_the_new_presets_are_valid_data_settings():
    for preset in ("asl_cutout", "csra"):
        raw = C.compose("resnet", "synthetic", C.dotted_to_nested(
            {"data.train_transform": preset, "data.test_transform": preset}))
        assert C.validate(raw).data.train_transform == preset


def test_gmbench_list_shows_every_entry_and_its_settings(capsys):
    from gmbench.cli.core import cmd_list
    assert cmd_list(None) == 0
    out = capsys.readouterr().out
    for title, reg in (("losses", LOSSES), ("optimizers", OPTIMIZERS), ("schedules", SCHEDULES),
                       ("augmentation presets", AUGMENTATIONS)):
        section = out.split(f"\n{title} (")[1].split("\n")[1:]
        section = section[:next((i for i, ln in enumerate(section) if not ln.startswith("  ")), None)]
        assert len(section) == len(reg.names())
        for name in reg.names():
            line = next((ln for ln in section if ln.split()[:1] == [name]), None)
            assert line is not None, (reg.kind, name)
            for key in reg.settings_keys(name):
                assert key in line, (name, key)


def test_the_recipes_do_not_import_a_method():
    for path in (ROOT / "gmbench" / "recipes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert not n.startswith("gmbench.models.") or n == "gmbench.models.base", (path, n)
