"""Issue 25: CSRA, ML-Decoder and Query2Label equal an independent re-derivation of their
authors' equations; Query2Label's trunk is frozen as the authors'; ML-GCN's classifier is
float32 under autocast; with EMA the engine keeps the raw and the EMA model's metrics per epoch.

The references below use plain matmuls and softmax (no nn.MultiheadAttention, no
nn.TransformerDecoderLayer, no gmbench layer), in float64, reading only the weights of the
model under test. What they follow:
  * Query2Label (SlongLiu/query2labels on DETR): decoder state t₀ = 0, per layer
    t ← LN₂(t + MHA(t + q, memory + p, memory)), t ← LN₃(t + FFN(t)), no self-attention and
    no LN₁; a final LN; encoder s ← LN(s + MHA(s + p, s + p, s)), then FFN; DETR's 2-D sine
    positions p (row half, then column half, sin/cos interleaved);
  * ML-Decoder (Alibaba-MIIL/ML_Decoder): memory = ReLU(tokens W + b); t = queries;
    t ← LN₁(t + t) (eval) in the self-attention slot, then cross-attention and FFN as above
    without positions; group FC: class c reads query ⌊c / g⌋ through column c mod g;
  * CSRA (Zhu & Wu, ICCV 2021; Kevinz-code/CSRA): per head, s_cj = m_c·x_j / ‖m_c‖,
    y_c = mean_j s_cj + λ Σ_j softmax_j(T s_cj) s_cj (T = ∞: max), summed over heads.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import FrozenBatchNorm2d

from baselines.q2l import Q2LConfig
from gmbench import create_model
from gmbench.models.backbone import build_resnet
from gmbench.models.trunk import freeze_batchnorm
from test_recipes_engine import _plain_fit
from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info

TOL = 1e-5


def _d(t):
    return t.detach().double()


def ref_layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * _d(ln.weight) + _d(ln.bias)


def ref_attention(query, key, value, attn):
    """Scaled dot-product attention per head, from the packed in-projection of ``attn``."""
    d, h = query.shape[-1], attn.num_heads
    dh = d // h
    w, b = _d(attn.in_proj_weight), _d(attn.in_proj_bias)
    q = query @ w[:d].T + b[:d]
    k = key @ w[d:2 * d].T + b[d:2 * d]
    v = value @ w[2 * d:].T + b[2 * d:]
    heads = []
    for i in range(h):
        cols = slice(i * dh, (i + 1) * dh)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(dh), -1)
        heads.append(weights @ v[..., cols])
    return torch.cat(heads, -1) @ _d(attn.out_proj.weight).T + _d(attn.out_proj.bias)


def ref_ffn(x, layer):
    hidden = torch.relu(x @ _d(layer.linear1.weight).T + _d(layer.linear1.bias))
    return hidden @ _d(layer.linear2.weight).T + _d(layer.linear2.bias)


def ref_sine_positions(h, w, d):
    """DETR's normalised sine positions, one channel at a time: [h·w, d]."""
    n = d // 2
    pos = torch.zeros(h, w, d, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            y, x = (i + 1) / h * 2 * math.pi, (j + 1) / w * 2 * math.pi
            for k in range(n):
                div = 10000 ** (2 * (k // 2) / n)
                trig = math.sin if k % 2 == 0 else math.cos
                pos[i, j, k], pos[i, j, n + k] = trig(y / div), trig(x / div)
    return pos.reshape(h * w, d)


def _tiny(name, **settings):
    """A ResNet-18 model in eval mode whose LayerNorm affines and attention biases are random
    (at init they are 1 / 0, which would hide e.g. a second LayerNorm: LN(LN(x)) ≈ LN(x))."""
    torch.manual_seed(0)
    model = create_model(name, tiny_info(), depth=18, **settings).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            elif isinstance(m, torch.nn.MultiheadAttention):
                m.in_proj_bias.uniform_(-0.2, 0.2)
                m.out_proj.bias.uniform_(-0.2, 0.2)
    return model


# ---------------------------------------------------------------- Query2Label


def ref_q2l(model, fmap):
    """Query2Label's head from the projected feature map [B, d, h, w] → logits [B, C]."""
    b, d, h, w = fmap.shape
    memory = _d(fmap).flatten(2).transpose(1, 2)
    pos = ref_sine_positions(h, w, d)
    for layer in model.encoder.layers:
        q = memory + pos
        memory = ref_layer_norm(memory + ref_attention(q, q, memory, layer.multihead_attn), layer.norm2)
        memory = ref_layer_norm(memory + ref_ffn(memory, layer), layer.norm3)
    label = _d(model.queries).expand(b, -1, -1)
    t = torch.zeros_like(label)
    for layer in model.decoder.layers:
        cross = ref_attention(t + label, memory + pos, memory, layer.multihead_attn)
        t = ref_layer_norm(t + cross, layer.norm2)
        t = ref_layer_norm(t + ref_ffn(t, layer), layer.norm3)
    t = ref_layer_norm(t, model.decoder.norm)
    return (t * _d(model.classifier.weight)).sum(-1) + _d(model.classifier.bias)


@pytest.fixture(scope="module")
def q2l():
    return _tiny("q2l", hidden_dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2,
                 frozen_bn=True, freeze_backbone="below_layer2")   # random init: set explicitly


def test_q2l_equals_the_authors_detr_decoder(q2l):
    batch = tiny_batch(q2l, b=2, size=96)                     # 3×3 map, 9 tokens
    with torch.no_grad():
        got = q2l(batch)["logits"]
        fmap = q2l.proj(q2l.backbone(batch["image"]))
    want = ref_q2l(q2l, fmap)
    assert got.shape == (2, NUM_CLASSES)
    assert torch.allclose(got.double(), want, atol=TOL, rtol=0), (got.double() - want).abs().max()


def test_q2l_transformer_is_xavier_initialised(q2l):
    """xavier-uniform: Var = 2 / (fan_in + fan_out); torch's nn.Linear default gives
    1 / (3 fan_in), about half of it here."""
    wide = _tiny("q2l", hidden_dim=64, heads=2, ffn_dim=256, encoder_layers=1, decoder_layers=1)
    for name, mod in (("encoder", wide.encoder.layers[0]), ("decoder", wide.decoder.layers[0])):
        for lin in (mod.linear1, mod.linear2, mod.multihead_attn.out_proj):
            fan_out, fan_in = lin.weight.shape
            var = lin.weight.var().item()
            assert var == pytest.approx(2 / (fan_in + fan_out), rel=0.15), (name, lin)


def test_q2l_decoder_has_no_self_attention_and_no_norm1(q2l):
    names = {n for n, _ in q2l.decoder.named_parameters()}
    assert not any(".self_attn." in n or ".norm1." in n for n in names)
    assert any(".multihead_attn." in n for n in names)


# ---------------------------------------------------------------- ML-Decoder


def ref_ml_decoder(model, fmap):
    tokens = _d(fmap).flatten(2).transpose(1, 2)
    memory = torch.relu(tokens @ _d(model.embed.weight).T + _d(model.embed.bias))
    t = _d(model.queries).expand(fmap.shape[0], -1, -1)
    for layer in model.decoder.layers:
        t = ref_layer_norm(t + t, layer.norm1)               # dropout is the identity in eval
        t = ref_layer_norm(t + ref_attention(t, memory, memory, layer.multihead_attn), layer.norm2)
        t = ref_layer_norm(t + ref_ffn(t, layer), layer.norm3)
    weight, bias = _d(model.group_fc.weight), _d(model.group_fc.bias)
    g = weight.shape[2]
    cols = [t[:, c // g] @ weight[c // g, :, c % g] + bias[c] for c in range(bias.shape[0])]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("query_scale", [1.0, 1e-3])
def test_ml_decoder_equals_the_authors_layer_and_group_fc(query_scale):
    """5 classes over 2 queries (g = 3, one padded output dropped). Small queries make
    LN₁(t + t) and LN₁(t) differ (the LayerNorm ε), so the self-attention slot is seen."""
    model = _tiny("ml_decoder", num_queries=2, embed_dim=16, heads=2, layers=2, ffn_dim=32)
    with torch.no_grad():
        model.queries.mul_(query_scale)
    batch = tiny_batch(model, b=2, size=96)
    with torch.no_grad():
        got = model(batch)["logits"]
        fmap = model.backbone(batch["image"])
    want = ref_ml_decoder(model, fmap)
    assert got.shape == (2, NUM_CLASSES)
    assert torch.allclose(got.double(), want, atol=TOL, rtol=0), (got.double() - want).abs().max()


# ---------------------------------------------------------------- CSRA


def ref_csra(model, fmap):
    x = _d(fmap).flatten(2)                                  # [B, D, L]
    out = torch.zeros(x.shape[0], model.head.weight.shape[1], dtype=torch.float64)
    for i, temp in enumerate(model.head.temperatures):
        for c in range(out.shape[1]):
            m = _d(model.head.weight[i, c])
            s = torch.einsum("d,bdl->bl", m, x) / m.norm()
            att = s.max(-1).values if math.isinf(temp) else (torch.softmax(temp * s, -1) * s).sum(-1)
            out[:, c] += s.mean(-1) + model.head.lam * att
    return out


def test_csra_equals_the_authors_equations():
    model = _tiny("csra", heads=4, lam=0.5)                  # temperatures 1, 2, 4, ∞
    batch = tiny_batch(model, b=2, size=96)
    with torch.no_grad():
        got = model(batch)["logits"]
        fmap = model.backbone(batch["image"])
    want = ref_csra(model, fmap)
    assert torch.allclose(got.double(), want, atol=TOL, rtol=0), (got.double() - want).abs().max()


# ---------------------------------------------------------------- Query2Label's trunk


def test_q2l_defaults_are_the_authors_trunk_for_pretrained_resnets_only():
    for pretrained in ("imagenet", "weights/r101.pth"):
        cfg = Q2LConfig(pretrained=pretrained)
        assert (cfg.frozen_bn, cfg.freeze_backbone) == (True, "below_layer2")
    for cfg in (Q2LConfig(), Q2LConfig(backbone="timm/resnet18", pretrained="w.safetensors")):
        assert (cfg.frozen_bn, cfg.freeze_backbone) == (False, "none")
    assert Q2LConfig(frozen_bn=True).frozen_bn                 # an explicit setting wins
    with pytest.raises(ValueError, match="freeze_backbone=below_layer2 names ResNet stages"):
        Q2LConfig(backbone="timm/resnet18", freeze_backbone="below_layer2")


def test_frozen_batchnorm_keeps_the_statistics_of_the_trunk():
    torch.manual_seed(0)
    trunk, _, _ = build_resnet(18)
    for m in trunk.modules():                                # non-trivial statistics and affine
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = trunk.eval()(x)
        frozen = freeze_batchnorm(copy.deepcopy(trunk)).train()   # train mode: still fixed
        got = frozen(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == 20
    assert torch.allclose(got, want, atol=1e-5)


def test_q2l_training_step_moves_neither_batchnorm_nor_stem_and_layer1(q2l):
    model = copy.deepcopy(q2l).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen_bn = [n for n, m in model.backbone.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen_bn) == 20
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    batch = tiny_batch(model, b=2, size=64)
    model.loss(model(batch), batch).backward()
    opt.step()
    after = model.state_dict()
    for name in frozen_bn:                                    # statistics and affine parameters
        for buf in ("weight", "bias", "running_mean", "running_var"):
            key = f"backbone.{name}.{buf}"
            assert torch.equal(after[key], before[key]), key
    stem_layer1 = model.backbone[:5]
    assert all(p.grad is None and not p.requires_grad for p in stem_layer1.parameters())
    for key in after:
        idx = key.split(".")[1] if key.startswith("backbone.") else None
        if idx is not None and int(idx) < 5:
            assert torch.equal(after[key], before[key]), key
    later = [p for p in model.backbone[5:].parameters()]
    assert later and all(p.grad is not None for p in later)
    assert not torch.equal(after["backbone.5.0.conv1.weight"], before["backbone.5.0.conv1.weight"])


# ---------------------------------------------------------------- ML-GCN


def test_ml_gcn_classifier_is_float32_under_bf16_autocast():
    model = _tiny("ml_gcn")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.label_classifiers()
    adj, emb = _d(model.adj), _d(model.embeddings)
    hidden = F.leaky_relu(adj @ (emb @ _d(model.gc1.weight).T), model.slope)
    want = adj @ (hidden @ _d(model.gc2.weight).T)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=TOL, rtol=0), (got.double() - want).abs().max()


# ---------------------------------------------------------------- EMA: raw and EMA per epoch


def test_ema_runs_keep_raw_and_ema_metrics_of_every_epoch(tmp_path):
    _, res = _plain_fit(tmp_path, tmp_path / "ck", **{"train.epochs": 2, "train.ema": 0.5})
    hist = res["history"]
    assert len(hist) == 2
    for row in hist:
        assert row["metrics"]["mAP"] == row["mAP"]            # the EMA model (reported)
        assert row["metrics_raw"]["mAP"] == row["raw_mAP"]
        assert "AP" not in row["metrics"] and "OF1" in row["metrics_raw"]
    last = hist[-1]
    assert last["metrics_raw"] == res["raw_metrics"]
    assert last["metrics"] == {k: v for k, v in res["metrics"].items() if k != "AP"}
    assert last["metrics"] != last["metrics_raw"]              # two models, two evaluations
    _, plain = _plain_fit(tmp_path, tmp_path / "ck2", **{"train.epochs": 1})
    assert "metrics_raw" not in plain["history"][0]            # no EMA: nothing extra
