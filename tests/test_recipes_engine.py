"""Recipes through the engine: every registered method learns under its default recipe
and under ASL + AdamW + OneCycle + EMA; OneCycle and EMA resume bit-exactly mid-epoch."""
import json

import pytest
import torch

from gmbench import config as C
from gmbench import engine, recipes
from gmbench.utils.checkpoint import list_checkpoints
from gmbench.data import read_labels
from gmbench.data.dataset import ImageDataset
from gmbench.data.transforms import build_transform
from gmbench.models.base import MLICModel
from gmbench.registry import list_models
from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info, tiny_model_cfg

from conftest import tiny_sets

# Test learning rates per optimizer: the methods' paper lrs (ssgrl: Adam 1e-5) are tuned for
# pretrained trunks over many epochs; here a random-init trunk must fit one batch in 40 steps.
TEST_LR = {"sgd": 0.02, "adam": 1e-3, "adamw": 1e-3}
STEPS, FALL = 40, 0.5   # the loss must fall to at most half its first value


def _recipe(name, modern):
    """(optim, loss) configs: the method's own (YAML) optimizer and loss, or the modern one."""
    _, cfg = tiny_model_cfg(name)
    from test_registry_methods import method_configs
    yaml_name = next(c for c, m in method_configs() if m == name)
    raw = C.compose(yaml_name, "synthetic")
    opt_name = "adamw" if modern else raw.get("optim", {}).get("name", "sgd")
    lr = TEST_LR[opt_name]
    if not modern and getattr(cfg, "loss_reduction", "mean") == "sum_classes":
        lr /= NUM_CLASSES  # a per-image sum over classes (GM-MLIC, Eq. 15): C× the mean's gradient
    optim = C.OptimConfig(name=opt_name, lr=lr, weight_decay=0.0,
                          scheduler="onecycle" if modern else "none",
                          backbone_lr_mult=raw.get("optim", {}).get("backbone_lr_mult", 1.0))
    loss = C.LossConfig(name="asl" if modern else "default")
    clip = raw.get("train", {}).get("clip_grad_norm")  # part of ML-GCN's and ResNet's recipes
    return optim, loss, (0.99 if modern else None), clip


@pytest.mark.parametrize("modern", [False, True], ids=["default", "asl-adamw-onecycle-ema"])
@pytest.mark.parametrize("name", list_models())
def test_every_method_learns(name, modern):
    torch.manual_seed(0)
    entry, mcfg = tiny_model_cfg(name)
    model = entry.fn(mcfg, tiny_info())
    batch = tiny_batch(model, b=4, size=32)
    optim_cfg, loss_cfg, decay, clip = _recipe(name, modern)
    opt = recipes.build_optimizer(model, optim_cfg)
    sch = recipes.build_scheduler(opt, optim_cfg, STEPS, 1)
    loss_fn = recipes.build_loss(loss_cfg, model)
    ema = recipes.ModelEma(model, decay) if decay else None
    model.train()
    losses = []
    for _ in range(STEPS):
        loss = loss_fn(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sch.step()
        if ema:
            ema.update(model)
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    end = sum(losses[-3:]) / 3
    assert end <= FALL * losses[0], f"{name}: loss {losses[0]:.4f} -> {end:.4f}"
    if ema:
        moved = [not torch.equal(e, p) for e, p in zip(ema.module.parameters(), model.parameters())]
        assert any(moved)


class CrashingNet(MLICModel):
    """Tiny conv + BN + linear; raises on forward call ``crash_at`` (a simulated kill)."""

    def __init__(self, c, crash_at=None):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.BatchNorm2d(4),
                                            torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, c)
        self.calls, self.crash_at = 0, crash_at

    def forward(self, batch):
        if self.training:
            self.calls += 1
            if self.calls == self.crash_at:
                raise KeyboardInterrupt("simulated kill")
        return {"logits": self.fc(self.backbone(batch["image"]).mean((2, 3)))}


def _fit(tmp_path, ck, crash_at=None):
    sets = C.parse_set(tiny_sets(**{
        "data.n_train": 40, "train.epochs": 2, "train.ckpt_every_steps": 1, "train.keep_last": 100,
        "train.deterministic": True, "loss.name": "asl", "optim.name": "adamw", "optim.lr": 0.01,
        "optim.scheduler": "onecycle", "train.ema": 0.9, "optim.no_decay_norm_bias": True}))
    cfg = C.validate(C.compose("resnet", "synthetic", sets))
    labels = {s: read_labels("synthetic", tmp_path / "data", s, **cfg.data.model_dump(
        exclude={"name", "root"})) for s in ("train", "test")}
    tf = build_transform("plain", 32, True)
    torch.manual_seed(0)
    model = CrashingNet(5, crash_at)
    train = ImageDataset(labels["train"], tf, seed=cfg.seed)
    test = ImageDataset(labels["test"], build_transform("plain", 32, False))
    return engine.fit(model, train, test, cfg, torch.device("cpu"), ck, method="t", log=lambda *_: None)


def test_onecycle_and_ema_resume_bit_exactly_mid_epoch(tmp_path):
    ref = _fit(tmp_path, tmp_path / "ref")
    assert ref["recipe"] == {"loss": "asl", "optimizer": "adamw", "scheduler": "onecycle",
                             "ema": 0.9, "evaluated": "ema"}
    assert ref["raw_metrics"]["mAP"] != ref["metrics"]["mAP"]  # both recorded, and they differ
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, tmp_path / "run", crash_at=8)  # 5 steps per epoch: mid-epoch 2
    res = _fit(tmp_path, tmp_path / "run")
    assert res["resumed_from"] == {"epoch": 1, "step": 2, "eval_pending": False}
    a = torch.load(list_checkpoints(tmp_path / "ref")[-1], weights_only=True)
    b = torch.load(list_checkpoints(tmp_path / "run")[-1], weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["scheduler"] == b["scheduler"]
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN AP  # noqa
    assert same(res["metrics"], ref["metrics"]) and same(res["raw_metrics"], ref["raw_metrics"])
    assert [h["loss"] for h in res["history"]] == [h["loss"] for h in ref["history"]]


def _plain_fit(tmp_path, ck, **over):
    sets = C.parse_set(tiny_sets(**{"train.epochs": 1, "train.deterministic": True,
                                    "optim.scheduler": "none", **over}))
    cfg = C.validate(C.compose("resnet", "synthetic", sets))
    labels = {s: read_labels("synthetic", tmp_path / "data", s, **cfg.data.model_dump(
        exclude={"name", "root"})) for s in ("train", "test")}
    torch.manual_seed(0)
    model = CrashingNet(5)
    tf = build_transform("plain", 32, False)
    res = engine.fit(model, ImageDataset(labels["train"], tf), ImageDataset(labels["test"], tf), cfg,
                     torch.device("cpu"), ck, method="t", log=lambda *_: None)
    return model, res


@pytest.mark.parametrize("option", [
    "train.channels_last",
    pytest.param("train.compile", marks=pytest.mark.slow)])  # inductor compiles C++: ~1 min
def test_channels_last_and_compile_train_the_same_model(tmp_path, option):
    if option == "train.compile" and not hasattr(torch, "compile"):
        pytest.skip("torch.compile is missing")
    a, ra = _plain_fit(tmp_path, tmp_path / "a")
    b, rb = _plain_fit(tmp_path, tmp_path / "b", **{option: True})
    if option == "train.channels_last":
        assert b.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5), k
    assert ra["metrics"]["mAP"] == pytest.approx(rb["metrics"]["mAP"], abs=1e-6)


def test_sigkill_mid_epoch_with_onecycle_and_ema_resumes_bit_exactly(tmp_path):
    """The CLI kill-and-resume of tests/test_resilience.py under ASL + AdamW + OneCycle + EMA."""
    import signal
    import subprocess

    from test_resilience import ENV, REPO, cli, launch_and_signal, suite_file
    from gmbench.utils.io import read_jsonl
    recipe = {"loss.name": "asl", "optim.name": "adamw", "optim.lr": 0.001,
              "optim.scheduler": "onecycle", "train.ema": 0.9}
    suite = suite_file(tmp_path)
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    res = subprocess.run(cli(suite, ref_out, **recipe), cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    proc = launch_and_signal(cli(suite, out, **recipe), out / "r" / "checkpoints",
                             "ckpt-e0001-s0000002.pt.sha256")
    assert proc.returncode == -signal.SIGKILL
    res = subprocess.run(cli(suite, out, **recipe), cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=400)
    assert res.returncode == 0 and "resuming epoch 2/2 at step 2" in res.stdout, res.stderr[-2000:]
    (ref,), (rec,) = read_jsonl(ref_out / "r" / "runs.jsonl"), read_jsonl(out / "r" / "runs.jsonl")
    assert rec["train"]["recipe"]["loss"] == "asl" and rec["train"]["recipe"]["evaluated"] == "ema"
    a = torch.load(list_checkpoints(ref_out / "r" / "checkpoints" / ref["run_id"])[-1], weights_only=True)
    b = torch.load(list_checkpoints(out / "r" / "checkpoints" / rec["run_id"])[-1], weights_only=True)
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert json.dumps(rec["metrics"]) == json.dumps(ref["metrics"])
    assert json.dumps(rec["train"]["raw_metrics"]) == json.dumps(ref["train"]["raw_metrics"])
