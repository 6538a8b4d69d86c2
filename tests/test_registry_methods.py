"""Every registered method, for free: build from its YAML, forward, loss, backward.

A new method (one file in baselines/ + one YAML) is covered here without any
test change.
"""
import numpy as np
import pytest
import torch

from gmbench import config as C
from gmbench.data.base import DataInfo
from gmbench.registry import METHODS, list_models

NUM_CLASSES = 5


def tiny_info(c=NUM_CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((40, c)) < 0.4).astype(np.int64)
    y[0] = 1
    co = y.T @ y
    return DataInfo(class_names=[f"class {i}" for i in range(c)], label_ratios=y.mean(0),
                    class_counts=y.sum(0), cooccurrence=co,
                    word_embeddings=rng.standard_normal((c, 300)).astype(np.float32),
                    embedding_source="random:seed=0", n_train=len(y))


def method_configs():
    """(config file, registered name) for every YAML in configs/methods."""
    out = []
    for name in C.available("methods"):
        block = C.load_yaml(C.named_yaml("methods", name)).get("model", {})
        out.append((name, block.get("name")))
    return out


def test_create_model_validates_settings():
    from gmbench import create_model
    model = create_model("resnet", tiny_info(), depth=18, pool="avg")
    assert model.record["pool"] == "avg"
    with pytest.raises(Exception, match="poool"):
        create_model("resnet", tiny_info(), depth=18, poool="avg")


def test_every_registered_method_has_a_yaml():
    configured = {model for _, model in method_configs()}
    missing = set(list_models()) - configured
    assert not missing, f"methods without a configs/methods/*.yaml: {missing}"


@pytest.mark.parametrize("config_name, model_name", method_configs())
def test_method_yaml_validates(config_name, model_name):
    assert model_name in list_models(), f"{config_name}.yaml names unknown model {model_name!r}"
    cfg = C.validate(C.compose(config_name, "synthetic"))
    assert cfg.model.name == model_name


def tiny_model_cfg(name, narrow=True):
    entry = METHODS.get(name)
    block = {"name": name}
    for cname, _ in method_configs():
        raw = C.load_yaml(C.named_yaml("methods", cname)).get("model", {})
        if raw.get("name") == name:
            block = dict(raw)
            break
    fields = entry.config.model_fields
    if "depth" in fields:
        block["depth"] = 18
    if "pretrained" in fields:
        block["pretrained"] = "none"
    # transformer heads at test width (Q2L's 8192-wide FFN alone took ~40 s per learning test)
    for key, small in (("ffn_dim", 256), ("embed_dim", 64)):
        if narrow and key in block:
            block[key] = small
    return entry, entry.config.model_validate(block)


def tiny_batch(model, b=2, size=64, m=3, c=NUM_CLASSES, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(b, 3, size, size, generator=g),
             "target": (torch.rand(b, c, generator=g) < 0.5).float(),
             "index": torch.arange(b)}
    batch["target_raw"] = batch["target"].clone()
    if getattr(model, "needs_boxes", False) or getattr(model, "needs_instance_features", False):
        xy = torch.rand(b, m, 2, generator=g) * 0.5
        wh = torch.rand(b, m, 2, generator=g) * 0.4 + 0.1
        batch["boxes"] = torch.cat([xy, xy + wh], -1)
        batch["box_mask"] = torch.ones(b, m, dtype=torch.bool)
        batch["box_mask"][1, -1] = False
    if getattr(model, "needs_instance_features", False):
        d = getattr(model, "instance_feature_dim", 1024)
        batch["inst_feat"] = torch.randn(b, m, d, generator=g)
    return batch


@pytest.mark.parametrize("name", list_models())
def test_method_contract(name):
    torch.manual_seed(0)
    entry, cfg = tiny_model_cfg(name)
    model = entry.fn(cfg, tiny_info())
    batch = tiny_batch(model)
    out = model(batch)
    probs = model.probs(out)
    assert probs.shape == (2, NUM_CLASSES)
    assert torch.all((probs >= 0) & (probs <= 1))
    loss = model.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    groups = model.param_groups(0.1, 0.1)
    n_group = sum(len(g["params"]) for g in groups)
    assert n_group == sum(1 for p in model.parameters() if p.requires_grad)
    assert isinstance(model.describe(), dict)
