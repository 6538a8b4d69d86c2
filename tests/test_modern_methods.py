"""CSRA, Query2Label and ML-Decoder against hand computations and invariants (the contract,
learning and float32 tests they get from the registry-parametrised files)."""
import math

import pytest
import torch

from baselines.csra import CSRAConfig, CSRAHead, residual_attention
from baselines.ml_decoder import GroupFC, MLDecoderConfig
from baselines.q2l import decoder_attention, sine_positions
from gmbench import create_model
from gmbench.models.base import PerClassLinear
from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info

# ---------------------------------------------------------------- CSRA


def test_csra_attention_is_max_at_infinity_and_mean_at_zero():
    s = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-1.0, 0.0, 0.5, -4.0]])
    assert residual_attention(s, math.inf).tolist() == [6.0, 0.5]
    assert residual_attention(s, 0.0).tolist() == pytest.approx([3.0, -1.125])
    # T = 1 by hand: Σ e^s·s / Σ e^s
    e = [math.exp(v) for v in (1.0, 2.0, 3.0, 6.0)]
    want = sum(a * b for a, b in zip(e, (1.0, 2.0, 3.0, 6.0))) / sum(e)
    assert residual_attention(s[:1], 1.0).item() == pytest.approx(want, rel=1e-6)
    # large T approaches the max, small T the mean
    assert residual_attention(s, 200.0).tolist() == pytest.approx([6.0, 0.5], abs=1e-4)
    assert residual_attention(s, 1e-6).tolist() == pytest.approx([3.0, -1.125], abs=1e-4)


def test_csra_head_logit_by_hand():
    """Width 2, one class, classifier (3, 4) (norm 5), two heads T = 1 and ∞, λ = 0.5."""
    head = CSRAHead(2, 1, [1.0, math.inf], lam=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]]]))
    x = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 1.0, 0.5]]).reshape(1, 2, 2, 2)
    ch0, ch1 = x[0, 0].flatten().tolist(), x[0, 1].flatten().tolist()
    s1 = [(3 * a + 4 * b) / 5 for a, b in zip(ch0, ch1)]
    s2 = ch1                                           # (0, 2) / 2 reads channel 1
    soft = [math.exp(v) for v in s1]
    head1 = sum(s1) / 4 + 0.5 * sum(a * b for a, b in zip(soft, s1)) / sum(soft)
    head2 = sum(s2) / 4 + 0.5 * max(s2)
    assert head(x).item() == pytest.approx(head1 + head2, rel=1e-6)


def test_csra_heads_follow_the_authors_table_or_explicit_temperatures():
    assert CSRAConfig(heads=4).head_temperatures() == [1.0, 2.0, 4.0, math.inf]
    cfg = CSRAConfig(temperatures=[1, 2, 3, 4, "inf"])
    assert cfg.head_temperatures() == [1.0, 2.0, 3.0, 4.0, math.inf]
    model = create_model("csra", tiny_info(), depth=18, temperatures=[1, 2, 3, 4, "inf"])
    assert model.head.weight.shape == (5, NUM_CLASSES, 512)
    assert model.describe()["temperatures"] == [1.0, 2.0, 3.0, 4.0, "inf"]
    with pytest.raises(ValueError, match="heads=2 but 5 temperatures"):
        CSRAConfig(heads=2, temperatures=[1, 2, 3, 4, "inf"])
    with pytest.raises(ValueError, match=">= 0"):
        CSRAConfig(temperatures=[-1.0])


# ---------------------------------------------------------------- Query2Label


@pytest.mark.parametrize("self_attention", [False, True])
def test_q2l_one_vector_per_label_and_attention_sums_to_one(self_attention):
    torch.manual_seed(0)
    model = create_model("q2l", tiny_info(), depth=18, hidden_dim=64, heads=4, ffn_dim=128,
                         encoder_layers=1, decoder_layers=2, self_attention=self_attention).eval()
    batch = tiny_batch(model, b=3, size=96)            # 96 px → a 3×3 map, 9 tokens
    seen = {}
    model.decoder.register_forward_hook(lambda m, i, o: seen.setdefault("labels", o))
    maps = decoder_attention(model, batch)
    assert seen["labels"].shape == (3, NUM_CLASSES, 64)   # one 64-d vector per label
    assert len(maps) == 2
    for a in maps:
        assert a.shape == (3, NUM_CLASSES, 9)
        assert torch.all(a >= 0)
        assert torch.allclose(a.sum(-1), torch.ones(3, NUM_CLASSES), atol=1e-5)
    # labels attend differently (the queries are not tied)
    assert not torch.allclose(maps[-1][:, 0], maps[-1][:, 1])
    # keeping the maps is switched off afterwards and changes no score
    assert all(layer.attention is None for layer in model.decoder.layers)
    with torch.no_grad():
        plain = model(batch)["logits"]
        model.decoder.layers[0].keep_attention = True
        assert torch.allclose(model(batch)["logits"], plain, atol=1e-6)
    n_self = sum(1 for n, _ in model.decoder.named_parameters() if ".self_attn." in n)
    assert (n_self > 0) == self_attention


def test_q2l_projection_and_sine_positions():
    model = create_model("q2l", tiny_info(), depth=18, hidden_dim=None, heads=4)
    assert isinstance(model.proj, torch.nn.Identity) and model.record["hidden_dim"] == 512
    assert model.record["ffn_dim"] == 2048
    pos = sine_positions(2, 3, 8)                      # 4 channels per axis
    assert pos.shape == (6, 8)
    rows = [math.pi] * 3 + [2 * math.pi] * 3           # row coordinate 2π·(i+1)/h, row-major
    cols = [2 * math.pi * m / 3 for m in (1, 2, 3)] * 2
    # channel k: frequency 10000^(2⌊k/2⌋/4); sine on even k, cosine on odd k
    assert pos[:, 1].tolist() == pytest.approx([math.cos(a) for a in rows], abs=1e-6)
    assert pos[:, 2].tolist() == pytest.approx([math.sin(a / 100) for a in rows], abs=1e-6)
    assert pos[:, 4].tolist() == pytest.approx([math.sin(a) for a in cols], abs=1e-6)
    assert pos[:, 7].tolist() == pytest.approx([math.cos(a / 100) for a in cols], abs=1e-6)
    assert len({tuple(r) for r in pos.tolist()}) == 6     # every location is distinct
    with pytest.raises(ValueError, match="divisible"):
        create_model("q2l", tiny_info(), depth=18, hidden_dim=66, heads=4)


# ---------------------------------------------------------------- ML-Decoder


def test_group_fc_maps_k_groups_to_all_classes_by_hand():
    torch.manual_seed(0)
    c, k, d = 5, 2, 4                                   # g = ⌈5/2⌉ = 3; 6 outputs, 5 kept
    fc = GroupFC(k, d, c)
    with torch.no_grad():
        fc.bias.copy_(torch.arange(c, dtype=torch.float32))
    assert fc.group == 3 and fc.weight.shape == (k, d, 3) and fc.bias.shape == (c,)
    h = torch.randn(2, k, d)
    out = fc(h)
    assert out.shape == (2, c)
    for b in range(2):
        for cls in range(c):
            q, j = divmod(cls, fc.group)               # class k·g + j reads query k
            want = float(h[b, q] @ fc.weight[q, :, j]) + cls
            assert out[b, cls].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_group_fc_with_one_query_per_class_is_the_per_class_readout():
    torch.manual_seed(1)
    c, d = NUM_CLASSES, 6
    fc, plain = GroupFC(c, d, c), PerClassLinear(c, d)
    with torch.no_grad():
        plain.weight.copy_(fc.weight[:, :, 0])
        fc.bias.normal_()
        plain.bias.copy_(fc.bias)
    h = torch.randn(3, c, d)
    assert fc.group == 1
    assert torch.allclose(fc(h), plain(h), atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fc(h.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("settings, k, g", [({}, NUM_CLASSES, 1), ({"num_queries": 2}, 2, 3),
                                            ({"group_factor": 2}, 3, 2)])
def test_ml_decoder_queries_and_groups(settings, k, g):
    torch.manual_seed(0)
    model = create_model("ml_decoder", tiny_info(), depth=18, embed_dim=32, heads=4, ffn_dim=64,
                         **settings).eval()
    assert (model.record["num_queries"], model.record["group_factor"]) == (k, g)
    batch = tiny_batch(model, b=2, size=64)
    maps = decoder_attention(model, batch)
    assert maps[0].shape == (2, k, 4)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, k), atol=1e-5)
    assert model(batch)["logits"].shape == (2, NUM_CLASSES)
    assert not model.queries.requires_grad                    # fixed, as the authors'
    assert "queries" in model.state_dict()                    # but saved with the weights
    assert not any(".self_attn." in n for n, _ in model.named_parameters())  # cross-attention only
    with pytest.raises(ValueError, match="not both"):
        MLDecoderConfig(num_queries=2, group_factor=2)


# ---------------------------------------------------------------- the recipes' loss reduction


def test_sum_reduction_is_the_sum_over_valid_entries():
    from gmbench import config as C
    from gmbench import recipes
    from gmbench.recipes.losses import asymmetric_loss
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([[1.0, 0, -1, 0], [0, 1, 1, -1], [0, 0, 0, 1]])
    out, batch = {"logits": logits}, {"target": target}
    mean = recipes.build_loss(C.LossConfig(name="asl"), None)(out, batch)
    total = recipes.build_loss(C.LossConfig(name="asl", reduction="sum"), None)(out, batch)
    assert total.item() == pytest.approx(10 * mean.item(), rel=1e-6)     # 10 valid entries
    one = [asymmetric_loss(logits[i:i + 1, j:j + 1], target[i:i + 1, j:j + 1], 4.0, 0.0, 0.05)
           for i in range(3) for j in range(4) if target[i, j] >= 0]
    assert total.item() == pytest.approx(float(sum(one)), rel=1e-5)
    with pytest.raises(ValueError, match="named loss"):
        C.LossConfig(reduction="sum")
    for name in ("asl", "ml_decoder", "q2l"):
        assert C.validate(C.compose(name, "synthetic")).loss.reduction == "sum"
