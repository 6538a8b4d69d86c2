"""Issue 15 item 3: under bfloat16 autocast every registered method hands the metric layer
float32 probabilities, with no more tied scores than a float32 run (bf16 logits keep 8
mantissa bits, so a few hundred images already tie)."""
import numpy as np
import pytest
import torch

from gmbench.registry import list_models

from test_registry_methods import NUM_CLASSES, tiny_batch, tiny_info, tiny_model_cfg


def n_ties(probs: torch.Tensor) -> int:
    """Scores equal to another score of the same class, summed over classes. probs [N, C]."""
    p = probs.double().numpy()
    return int(sum(len(col) - len(np.unique(col)) for col in p.T))


@pytest.mark.parametrize("name", list_models())
def test_probs_are_float32_and_untied_under_bf16_autocast(name):
    torch.manual_seed(0)
    entry, cfg = tiny_model_cfg(name, narrow=False)  # the tie counts are for these widths
    model = entry.fn(cfg, tiny_info()).eval()
    batch = tiny_batch(model, b=96, size=32)
    with torch.no_grad():
        ref = model.probs(model(batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
            inside = model.probs(out)          # the metric layer's input, even inside autocast
        outside = model.probs(out)
    assert ref.dtype == inside.dtype == outside.dtype == torch.float32
    assert ref.shape == (96, NUM_CLASSES)
    assert n_ties(inside) == n_ties(outside) == n_ties(ref), (n_ties(inside), n_ties(ref))
    # The scores really came from a bf16 trunk (else the test would prove nothing).
    assert not torch.equal(inside, ref)


def test_bf16_logits_would_tie():
    """The failure mode the float32 heads prevent: rounding logits to bfloat16 ties them."""
    logits = torch.randn(96, NUM_CLASSES, generator=torch.Generator().manual_seed(0)) * 0.5
    assert n_ties(torch.sigmoid(logits)) == 0
    assert n_ties(torch.sigmoid(logits.bfloat16().float())) > 5
