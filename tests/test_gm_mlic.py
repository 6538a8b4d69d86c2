"""GM-MLIC (method gm_mlic): DGL vs dense equivalence for every ablation, masking,
the Eq. 15 loss against a hand computation, e2e mode, registration and training."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from gmbench.data.base import DataInfo
from gmbench.graph import knn_neighbours
from gmbench.models.base import masked_bce_with_logits
from gmbench.models.gm_mlic import GMMLIC, GMMLICConfig, weighted_bce_from_logits
from gmbench.models.gm_mlic.dense import dense_scores

ROOT = Path(__file__).resolve().parents[1]
C, D, DW = 5, 12, 7
WORD = np.random.default_rng(0).standard_normal((C, DW)).astype(np.float32)
RATIOS = np.array([0.1, 0.5, 0.05, 0.3, 0.9])
HAS_DGL = True
try:
    import dgl  # noqa: F401
except Exception:
    HAS_DGL = False
needs_dgl = pytest.mark.skipif(not HAS_DGL, reason="DGL is not installed")


def make_model(backend="dense", seed=0, **kw) -> GMMLIC:
    args = dict(features="cache", feat_dim=D, enc_dim=10, dims=[8, 6], knn_k=5, backend=backend,
                beta=0.4)
    args.update(kw)
    torch.manual_seed(seed)
    return GMMLIC(GMMLICConfig(**args), WORD, RATIOS)


def make_batch(counts, M, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B = len(counts)
    xy = torch.rand(B, M, 2, generator=g) * 0.7
    boxes = torch.cat([xy, xy + torch.rand(B, M, 2, generator=g) * 0.3 + 0.01], -1)
    mask = torch.arange(M)[None] < torch.tensor(counts)[:, None]
    feat = torch.randn(B, M, D, generator=g) * mask[..., None]    # collate pads with zeros
    target = torch.randint(-1, 2, (B, C), generator=g).to(dtype)
    return {"boxes": boxes.to(dtype), "box_mask": mask, "inst_feat": feat.to(dtype),
            "target": target, "image": torch.zeros(B, 3, 8, 8, dtype=dtype)}


def run(model, batch, backend):
    """probs, valid scores, loss and every parameter's gradient (plus the input's)."""
    model.backend = backend
    model.zero_grad()
    batch = dict(batch, inst_feat=batch["inst_feat"].clone().requires_grad_(True))
    out = model(batch)
    loss = model.loss(out, batch)
    loss.backward()
    assert model.record["backend"] == backend
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out["probs"].detach(), out["scores"].detach(), loss.detach(), grads, batch["inst_feat"].grad


ABLATIONS = {
    "full": {},
    "wo_Go": {"use_instance_graph": False},
    "wo_Gl": {"use_label_graph": False},
    "wo_ILM": {"use_matching_edges": False},
    "none": {"use_instance_graph": False, "use_label_graph": False, "use_matching_edges": False},
    "3_modules_k2": {"dims": [16, 12, 10], "mlp_layers": 3, "knn_k": 2},
    "no_norm_top_m": {"mlp_norm": "none", "top_m": 4},
    "residual": {"residual": True, "enc_dim": 8, "dims": [8, 8]},
}


@needs_dgl
@pytest.mark.parametrize("name", list(ABLATIONS))
def test_dgl_and_dense_agree(name):
    # Image 0: one instance (k=5 > count); image 2: no box (whole-image fallback);
    # image 3: 3 instances (k > m-1); M=7 so kNN needs top-k over padded slots.
    model = make_model(**ABLATIONS[name]).double()
    batch = make_batch([1, 7, 0, 3], 7, seed=len(name))
    dp, ds, dl, dg, dx = run(model, batch, "dense")
    gp, gs, gl, gg, gx = run(model, batch, "dgl")
    torch.testing.assert_close(gp, dp, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(gs, ds, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(gl, dl, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(gx, dx, rtol=1e-5, atol=1e-12)
    assert set(dg) == set(gg)
    for n in dg:  # every parameter is used, in both backends, with the same gradient
        assert dg[n].abs().max() > 0, f"{n} got no gradient"
        torch.testing.assert_close(gg[n], dg[n], rtol=1e-5, atol=1e-10 * float(dg[n].abs().max()),
                                   msg=lambda m, n=n: f"{n}: {m}")


def test_state_dict_identical_across_backends():
    a = make_model("dense").state_dict()
    b = make_model("auto" if not HAS_DGL else "dgl").state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)   # same seed → same init, one parameter set
    assert not any("word" in k or "ratios" in k for k in a)  # data, not parameters


@pytest.mark.parametrize("backend", ["dense"] + (["dgl"] if HAS_DGL else []))
def test_padded_instances_never_win_and_images_independent(backend):
    model = make_model(backend).double()
    model.backend = backend
    batch = make_batch([2, 6, 1], 6, seed=5)
    noisy = dict(batch)
    pad = ~batch["box_mask"]
    noisy["inst_feat"] = batch["inst_feat"] + 50.0 * torch.randn(3, 6, D, dtype=torch.float64) * pad[..., None]
    noisy["boxes"] = torch.where(pad[..., None], torch.rand(3, 6, 4, dtype=torch.float64), batch["boxes"])
    with torch.no_grad():
        out, out_noisy = model(batch), model(noisy)
        # Non-vacuous: some padded slot would beat every valid slot if it were not masked.
        feats, boxes, mask = model._inputs(noisy)
        nbr, nm = knn_neighbours(boxes, mask, 5)
        raw = dense_scores(model.head, feats, boxes, mask, nbr, nm, model.word.double())
        assert (raw.amax(1) > out_noisy["logits"]).any()
        singles = [model({k: v[b:b + 1] for k, v in batch.items()})["probs"] for b in range(3)]
    torch.testing.assert_close(out_noisy["probs"], out["probs"], rtol=1e-12, atol=0)
    assert torch.all(out_noisy["scores"][pad[:, :out_noisy["scores"].shape[1]]] == 0)
    torch.testing.assert_close(torch.cat(singles), out["probs"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["probs"], out["scores"].amax(1), rtol=1e-12, atol=0)


def test_node_attributes_are_standardised():
    # Unit-norm word vectors would sit far below the encoder's bias scale (every label would
    # start as nearly the same state); each row is standardised over its D dims instead.
    model = make_model("dense", seed=1)
    w = model.word
    torch.testing.assert_close(w.mean(1), torch.zeros(C), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(C), atol=1e-4, rtol=0)
    v = torch.nn.functional.normalize(model.head.enc_l(w=w), dim=1)
    off = (v @ v.t() - torch.eye(C)).sum() / (C * C - C)
    assert off < 0.8, float(off)        # was ~0.97 on raw unit-norm vectors
    feats, _, _ = model._inputs(make_batch([3, 2], 3, dtype=torch.float32))
    torch.testing.assert_close(feats.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)


def test_instance_order_does_not_matter():
    model = make_model("dense").double()
    batch = make_batch([5], 5, seed=9)
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = dict(batch, boxes=batch["boxes"][:, perm], inst_feat=batch["inst_feat"][:, perm])
    with torch.no_grad():
        torch.testing.assert_close(model(shuffled)["probs"], model(batch)["probs"], rtol=1e-10, atol=0)


def test_loss_matches_hand_computation_and_is_safe_at_extremes():
    z = torch.tensor([[2.0, -1.0, 0.5, -3.0, 0.0], [0.3, 1.5, -0.2, 4.0, -2.5]])
    y = torch.tensor([[1.0, 0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 1.0, -1.0, 0.0]])
    r, beta = torch.tensor(RATIOS, dtype=torch.float32), 0.4
    # Hand computation of Eq. 15 (with the minus sign), mean over the 8 non-ignored entries.
    total, n = 0.0, 0
    for i in range(2):
        for c in range(5):
            t = float(y[i, c])
            if t < 0:
                continue
            p = 1.0 / (1.0 + np.exp(-float(z[i, c])))
            w = t * np.exp(beta * (1 - RATIOS[c])) + (1 - t) * np.exp(beta * RATIOS[c])
            total += -w * (t * np.log(p) + (1 - t) * np.log(1 - p))
            n += 1
    got = weighted_bce_from_logits(z, y, r, beta)
    assert n == 8 and abs(float(got) - total / n) < 1e-6
    # beta = 0 → every weight is 1 → the plain masked BCE.
    assert abs(float(weighted_bce_from_logits(z, y, r, 0.0)) - float(masked_bce_with_logits(z, y))) < 1e-6
    # p rounds to exactly 0 / 1 in float32: still finite, equal to w·|z| for a wrong sign.
    big = torch.tensor([[120.0, -120.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0]])
    rr = torch.tensor([0.2, 0.7])
    p = torch.sigmoid(big.detach())
    assert p[0, 0] == 1.0 and p[0, 1] == 0.0
    assert torch.isinf(-torch.log(1 - p[0, 0]))          # the naive formula would be inf
    loss = weighted_bce_from_logits(big, t, rr, beta)
    loss.backward()
    expect = (np.exp(beta * 0.2) * 120 + np.exp(beta * 0.3) * 120) / 2
    assert torch.isfinite(loss) and abs(float(loss) - expect) < 1e-3
    assert torch.isfinite(big.grad).all()


@pytest.mark.parametrize("roi_layer", ["layer4", "layer3"])
def test_e2e_forward_backward_tiny_images(roi_layer):
    cfg = GMMLICConfig(features="e2e", depth=18, pretrained="none", enc_dim=8, dims=[8, 6],
                       backend="dense", roi_size=3, roi_layer=roi_layer)
    torch.manual_seed(0)
    model = GMMLIC(cfg, WORD, RATIOS)
    assert not model.needs_instance_features and model.needs_boxes
    batch = make_batch([2, 0], 2, dtype=torch.float32)
    del batch["inst_feat"]
    batch["image"] = torch.randn(2, 3, 64, 64)
    out = model(batch)
    assert out["probs"].shape == (2, C) and out["scores"].shape[:2] == (2, 2)
    model.loss(out, batch).backward()
    # the trunk trains through RoIAlign, layer4 too when it runs per RoI (C4 head)
    assert model.backbone[0].weight.grad.abs().sum() > 0
    assert model.backbone[-1][-1].conv2.weight.grad.abs().sum() > 0
    groups = model.param_groups(0.1, 0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"] and groups[0]["lr"] == pytest.approx(0.01)
    assert model.describe()["backbone"] == "resnet18"


def test_registered_method_trains_and_yaml_validates():
    from gmbench.registry import METHODS
    entry = METHODS.get("gm_mlic")
    block = yaml.safe_load((ROOT / "configs/methods/gm_mlic.yaml").read_text())["model"]
    paper = entry.config(**block)
    assert paper.top_m == 35 and paper.beta == 0.4 and paper.dims == [512, 256]
    info = DataInfo(class_names=[f"c{i}" for i in range(C)], label_ratios=RATIOS,
                    class_counts=np.ones(C, dtype=np.int64), cooccurrence=np.eye(C, dtype=np.int64),
                    word_embeddings=WORD, embedding_source="random:seed=0", n_train=10)
    cfg = entry.config(features="cache", feat_dim=D, enc_dim=16, dims=[16, 8], backend="dense")
    torch.manual_seed(0)
    model = entry.fn(cfg, info)
    batch = make_batch([3, 1, 4, 2], 4, seed=1, dtype=torch.float32)
    opt = torch.optim.Adam([p for g in model.param_groups(3e-3, 1.0) for p in g["params"]], lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(model(batch), batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0] and min(losses[-5:]) < min(losses[:5]), losses
    assert model.describe()["backend"] == "dense"
    with pytest.raises(ValidationError):
        entry.config(dims=[])
    with pytest.raises(ValidationError):
        entry.config(knn=3)


def test_auto_falls_back_to_dense_when_dgl_cannot_run(monkeypatch):
    import gmbench.models.gm_mlic.model as mm
    monkeypatch.setattr(mm, "dgl_runs_on", lambda device: (False, "CPU-only DGL build"))
    model = make_model("auto").double()
    model(make_batch([2], 2))
    assert model.describe()["backend"] == "dense"
    assert model.describe()["dgl_unusable"] == "CPU-only DGL build"


def test_imports_and_runs_without_dgl():
    code = (
        "import sys; sys.modules['dgl'] = None\n"
        "import numpy as np, torch\n"
        "from gmbench.models.gm_mlic import GMMLIC, GMMLICConfig\n"
        "w, r = np.ones((3, 4), 'float32'), np.full(3, .5)\n"
        "m = GMMLIC(GMMLICConfig(feat_dim=6, enc_dim=4, dims=[4]), w, r)\n"
        "b = {'boxes': torch.rand(1, 2, 4), 'box_mask': torch.ones(1, 2, dtype=torch.bool),"
        " 'inst_feat': torch.randn(1, 2, 6)}\n"
        "m(b); print(m.describe()['backend'])\n"
        "try:\n    GMMLIC(GMMLICConfig(feat_dim=6, backend='dgl'), w, r)\n"
        "except ImportError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "dense"
    assert lines[1].startswith("ERR") and "dgl==2.1.0" in lines[1] and "torch==2.2.1" in lines[1]


def test_cache_mode_reads_instance_caches_through_the_dataset(tmp_path):
    from PIL import Image

    from gmbench.data.base import DataConfig, LabelSet
    from gmbench.data.dataset import ImageDataset, collate
    from gmbench.data.transforms import build_transform
    from gmbench.instances import BoxesConfig, BoxesSource, default_cache_dir
    from gmbench.instances.pipeline import run_extraction
    from types import SimpleNamespace

    from gmbench.instances.source import open_sources
    rng = np.random.default_rng(0)
    paths, boxes = [], []
    for i in range(3):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(p)
        boxes.append(np.array([[2, 3, 30, 20], [10, 10, 40, 38]][: i + 1], np.float32))
    labels = LabelSet(image_ids=[f"im{i}" for i in range(3)], class_names=[f"c{c}" for c in range(C)],
                      targets=rng.integers(0, 2, (3, C)).astype(np.int8), image_paths=paths,
                      boxes=boxes)
    dcfg = DataConfig(name="tiny", cache_dir=str(tmp_path / "dc"), train_split="train",
                      test_split="test")
    model = make_model("dense", feat_dim=256, top_m=4, instance_source="boxes")
    with pytest.raises(FileNotFoundError, match="gmbench extract"):
        open_sources(model, SimpleNamespace(model=model.cfg, data=dcfg), tmp_path)
    src = BoxesSource(BoxesConfig(depth=18, weights="none", min_size=32, max_size=64), 4, "cpu", labels)
    for split in ("train", "test"):
        run_extraction(labels, default_cache_dir(tmp_path / "dc", split, "boxes", 4), src,
                       dataset="tiny", split=split, top_m=4)
    train, test = open_sources(model, SimpleNamespace(model=model.cfg, data=dcfg), tmp_path)
    assert not model.needs_images
    # Cache mode never opens (or augments) the image: the files may as well be gone.
    for p in paths:
        p.unlink()
    transform = lambda *a: pytest.fail("cache mode must not transform images")  # noqa: E731
    ds = ImageDataset(labels, transform, with_boxes=True, instance_source=train, load_image=False)
    batch = collate([ds[i] for i in range(3)])
    assert "image" not in batch
    assert batch["inst_feat"].shape == (3, 2, 256) and batch["box_mask"].sum().item() == 1 + 2 + 2
    out = model(batch)
    assert out["probs"].shape == (3, C) and torch.isfinite(model.loss(out, batch))
    assert len(model.describe()["instance_caches"]) == 2
