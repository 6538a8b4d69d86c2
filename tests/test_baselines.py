"""Method-specific tests of the ML-GCN, SSGRL-style and example baselines (tiny sizes:
ResNet-18 trunk, 64 px images, 5 classes). Generic contract checks live in
tests/test_registry_methods.py."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from baselines.example_mean_pool import ExampleMeanPoolConfig
from baselines.ml_gcn import MLGCNConfig, conditional_probability, mlgcn_adjacency
from baselines.ssgrl import GatedGraph, SSGRLConfig
from gmbench.data.base import DataConfig, DataInfo
from gmbench.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
C = 5

# ---------------------------------------------------------------- ML-GCN's A, by hand
# 4 classes; counts 10, 5, 4, 0 (class 3 never occurs: its row and column are 0).
# Pairs: (0,1) 4 images, (0,2) 1, (1,2) 2.
COOC = np.array([[10, 4, 1, 0],
                 [4, 5, 2, 0],
                 [1, 2, 4, 0],
                 [0, 0, 0, 0]])
COUNTS = np.array([10, 5, 4, 0])
# P[i, j] = cooc[i, j] / count[i], diagonal dropped:
#   row 0: 4/10 = .4, 1/10 = .1     row 1: 4/5 = .8, 2/5 = .4
#   row 2: 1/4 = .25, 2/4 = .5      row 3: 0/0 → no evidence → 0
# Binarised at tau = .4 (P >= tau is an edge; 4/10 is exactly the double 0.4):
#   B = [[0,1,0,0], [1,0,1,0], [0,1,0,0], [0,0,0,0]]
#
# paper (p = .2): each row spreads p over its edges and keeps 1 - p on the diagonal;
#   row 0: one edge → A01 = .2;  row 1: two edges → A10 = A12 = .1;  row 2: A21 = .2;
#   row 3: no edge → A33 = 1.  All row sums are 1, so D = I and Â = Aᵀ:
PAPER = np.array([[0.8, 0.1, 0.0, 0.0],
                  [0.2, 0.8, 0.2, 0.0],
                  [0.0, 0.1, 0.8, 0.0],
                  [0.0, 0.0, 0.0, 1.0]])
# reference: A = .25 · B / column sums of B (columns 0..3 sum to 1, 2, 1, 0) + I
#   A = [[1, .125, 0, 0], [.25, 1, .25, 0], [0, .125, 1, 0], [0, 0, 0, 1]]
#   row sums d = 1.125, 1.5, 1.125, 1;  Â[i, j] = A[j, i] / sqrt(d_i d_j)
#   diagonal: 1/1.125 = 8/9, 1/1.5 = 2/3, 8/9, 1
#   sqrt(1.125 · 1.5) = sqrt(27/16) = 3·sqrt(3)/4, so
#   Â[0,1] = A[1,0] / (3√3/4) = .25 · 4 / (3√3) = 1/(3√3) ≈ .19245009
#   Â[1,0] = A[0,1] / (3√3/4) = .125 · 4 / (3√3) = 1/(6√3) ≈ .09622504
#   Â[1,2] = A[2,1] / (3√3/4) = 1/(6√3);  Â[2,1] = A[1,2] / (3√3/4) = 1/(3√3)
REFERENCE = np.array([[0.88888889, 0.19245009, 0.0, 0.0],
                      [0.09622504, 0.66666667, 0.09622504, 0.0],
                      [0.0, 0.19245009, 0.88888889, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("variant,expected", [("paper", PAPER), ("reference", REFERENCE)])
def test_mlgcn_adjacency_hand_computed(variant, expected):
    got = mlgcn_adjacency(COOC, COUNTS, tau=0.4, p=0.2, variant=variant)
    assert got.dtype == np.float32 and got.shape == (4, 4)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_mlgcn_adjacency_threshold_and_errors():
    # Just above 0.4 the .4 edge 0→1 disappears: row 0 is isolated (Â00 = 1) and
    # row 1's in-weight from node 0 vanishes from Â[0, 1] = A[1, 0] / sqrt(d0 d1) too.
    got = mlgcn_adjacency(COOC, COUNTS, tau=0.41, p=0.2, variant="paper")
    assert got[0, 0] == pytest.approx(1.0) and got[1, 0] == 0.0
    with pytest.raises(ValueError, match="adj_variant"):
        mlgcn_adjacency(COOC, COUNTS, variant="other")
    with pytest.raises(ValueError, match=r"\[C, C\]"):
        mlgcn_adjacency(COOC[:3], COUNTS)
    with pytest.raises(ValueError, match="non-negative"):
        conditional_probability(-COOC, COUNTS)


# ---------------------------------------------------------------- tiny models
def tiny_info(seed: int = 0) -> DataInfo:
    """Side information of a random 40-image training set (class 4 never occurs)."""
    rng = np.random.default_rng(seed)
    t = (rng.random((40, C)) < 0.4).astype(np.int64)
    t[:, 4] = 0
    return DataInfo(class_names=[f"c{i}" for i in range(C)], label_ratios=t.mean(0),
                    class_counts=t.sum(0), cooccurrence=t.T @ t,
                    word_embeddings=rng.standard_normal((C, 300)).astype(np.float32),
                    embedding_source=f"random:seed={seed}", n_train=40)


def tiny_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(4, 3, 64, 64, generator=g),
            "target": torch.tensor([[1, 0, 1, -1, 0], [0, 1, 0, 0, 0],
                                    [1, 1, 0, 1, 0], [0, 0, 1, 1, 0]], dtype=torch.float32),
            "index": torch.arange(4)}


SMALL = {"ml_gcn": {"depth": 18, "hidden_dim": 64},
         "ssgrl": {"depth": 18, "attention_dim": 64},
         "example_mean_pool": {"depth": 18}}


def build(name: str, **over):
    entry = METHODS.get(name)
    torch.manual_seed(0)
    return entry.fn(entry.config(name=name, **{**SMALL[name], **over}), tiny_info())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_loss_decreases(name):
    model, batch = build(name), tiny_batch()
    out = model(batch)
    assert out["logits"].shape == (4, C)
    assert model.probs(out).shape == (4, C)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_mlgcn_pooling_and_record():
    model, batch = build("ml_gcn"), tiny_batch()
    fmap = model.backbone(batch["image"])
    w = model.label_classifiers()
    assert w.shape == (C, 512)  # GCN output follows the ResNet-18 width
    torch.testing.assert_close(model(batch)["logits"], fmap.amax(dim=(2, 3)) @ w.t())
    # Class 4 never occurs, so it has no edge and only sees itself in Â.
    adj = model.adj.numpy()
    assert adj[4, 4] == pytest.approx(1.0) and adj[4, :4].sum() == 0 and adj[:4, 4].sum() == 0
    assert model.describe()["adjacency"].startswith("paper")


def test_ssgrl_attention_sums_to_one_and_pools_the_map():
    model, batch = build("ssgrl"), tiny_batch()
    model.eval()
    with torch.no_grad():
        fmap = model.backbone(batch["image"])                      # [4, 512, 2, 2]
        feats, attn = model.decouple(fmap, model.embeddings)
        out = model(batch)
    assert attn.shape == (4, C, 4) and feats.shape == (4, C, 512)
    torch.testing.assert_close(attn.sum(-1), torch.ones(4, C))
    assert (attn >= 0).all()
    torch.testing.assert_close(out["attention"], attn)
    # Each class feature is the attention-weighted sum of the map's locations.
    manual = torch.einsum("bcl,bdl->bcd", attn, fmap.flatten(2))
    torch.testing.assert_close(feats, manual)
    # Different word embeddings give different attention.
    assert not torch.allclose(attn[:, 0], attn[:, 1])


def test_gated_graph_follows_edges():
    # Edge 0 → 1 only; class 2 is isolated.
    a = np.zeros((3, 3), dtype=np.float32)
    a[0, 1] = 0.7
    torch.manual_seed(0)
    net = GatedGraph(8, a, steps=3)
    h = torch.randn(2, 3, 8)
    base = net(h)
    bumped = h.clone()
    bumped[:, 2] += 1.0      # changing the isolated node affects only itself
    out = net(bumped)
    torch.testing.assert_close(out[:, :2], base[:, :2])
    assert not torch.allclose(out[:, 2], base[:, 2])
    bumped = h.clone()
    bumped[:, 1] += 1.0      # node 0 hears node 1 along A, node 1 hears 0 along Aᵀ
    out = net(bumped)
    assert not torch.allclose(out[:, 0], base[:, 0])
    torch.testing.assert_close(out[:, 2], base[:, 2])
    torch.testing.assert_close(GatedGraph(8, a, steps=0)(h), h)


def test_ssgrl_freeze_below_layer4():
    model, batch = build("ssgrl", freeze_backbone="below_layer4"), tiny_batch()
    model.train()
    frozen, layer4 = model.backbone[:7], model.backbone[7]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in layer4.parameters())
    assert not any(m.training for m in frozen.modules() if m is not frozen)
    assert all(m.training for m in layer4.modules())
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    groups = model.param_groups(1e-3, 0.1)
    opt = torch.optim.SGD(groups, lr=1e-3)
    model.loss(model(batch), batch).backward()
    opt.step()
    for k, v in frozen.state_dict().items():   # weights and BN running stats unchanged
        torch.testing.assert_close(v, before[k])


def test_example_bias_starts_at_label_prior():
    model = build("example_mean_pool")
    with torch.no_grad():
        model.fc.weight.zero_()
        probs = model.probs(model(tiny_batch()))
    r = np.clip(tiny_info().label_ratios, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(probs.numpy(), np.tile(r, (4, 1)), rtol=1e-5)


def test_side_info_mismatch_is_a_clear_error():
    info = tiny_info()
    info.word_embeddings = info.word_embeddings[:3]
    with pytest.raises(ValueError, match="word_embeddings"):
        METHODS.get("ml_gcn").fn(MLGCNConfig(depth=18), info)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("name,cls", [("ml_gcn", MLGCNConfig), ("ssgrl", SSGRLConfig),
                                      ("example_mean_pool", ExampleMeanPoolConfig)])
def test_method_yaml_keys_are_valid(name, cls):
    from gmbench.config import OptimConfig, TrainConfig
    doc = yaml.safe_load((ROOT / "configs" / "methods" / f"{name}.yaml").read_text())
    assert cls.model_validate(doc["model"]).name == name
    OptimConfig.model_validate(doc.get("optim", {}))
    TrainConfig.model_validate(doc.get("train", {}))
    assert set(doc.get("data", {})) <= set(DataConfig.model_fields)
    with pytest.raises(ValidationError):
        cls.model_validate({**doc["model"], "no_such_key": 1})
