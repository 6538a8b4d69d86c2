"""Assignment-graph construction (gmbench.graph): kNN against a brute-force reference,
instance preparation, and the vectorised DGL builder against dgl.batch of per-image graphs."""
from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np
import pytest
import torch

from gmbench.graph import build_dgl_graph, keys as K, knn_neighbours, label_pair_mask, prepare_instances


def random_boxes(counts, M, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(counts)
    xy = torch.rand(B, M, 2, generator=g) * 0.7
    wh = torch.rand(B, M, 2, generator=g) * 0.3 + 0.01
    boxes = torch.cat([xy, xy + wh], -1)
    mask = torch.arange(M)[None] < torch.tensor(counts)[:, None]
    return boxes, mask


def brute_knn(boxes: np.ndarray, m: int, k: int):
    """For each valid i: the set of min(k, m-1) nearest other instances (plain loops)."""
    c = (boxes[:m, :2] + boxes[:m, 2:]) / 2
    out = []
    for i in range(m):
        d = [(float(np.sum((c[i] - c[j]) ** 2)), j) for j in range(m) if j != i]
        d.sort()
        out.append([j for _, j in d[:k]])
    return out


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_knn_matches_brute_force(k):
    counts, M = [1, 7, 4, 0, 7], 7
    boxes, mask = random_boxes(counts, M, seed=k)
    nbr, nmask = knn_neighbours(boxes, mask, k)
    assert nbr.shape == (5, M, min(k, M - 1))
    for b, m in enumerate(counts):
        ref = brute_knn(boxes[b].numpy().astype(np.float64), m, k)
        for i in range(M):
            got = nbr[b, i][nmask[b, i]].tolist()
            if i >= m:
                assert got == []           # padded nodes receive nothing
            else:
                assert got == ref[i]       # same neighbours, ascending distance
                assert len(got) == min(k, m - 1)


def test_prepare_instances_top_m_trim_and_fallback():
    boxes, mask = random_boxes([3, 0, 6], 6)
    feats = torch.randn(3, 6, 2)
    b2, m2, f2 = prepare_instances(boxes, mask, top_m=4, feats=feats)
    assert b2.shape == (3, 4, 4) and f2.shape == (3, 4, 2)
    assert m2.tolist() == [[True] * 3 + [False], [True, False, False, False], [True] * 4]
    assert b2[1, 0].tolist() == [0.0, 0.0, 1.0, 1.0]       # whole-image fallback instance
    assert torch.equal(b2[0], boxes[0, :4]) and torch.equal(f2[2], feats[2, :4])
    # trailing all-padding slots are dropped
    b3, m3, _ = prepare_instances(boxes, mask & (torch.arange(6) < 2), top_m=35)
    assert m3.shape == (3, 2)
    # a batch with no box at all
    b4, m4, _ = prepare_instances(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), 5)
    assert m4.tolist() == [[True], [True]]


def test_label_pair_mask_is_all_ordered_distinct_pairs():
    pm = label_pair_mask(6)
    assert int(pm.sum()) == 6 * 5 and not pm.diagonal().any()


def _edges(g, et):
    s, d = g.edges(etype=et)
    return s.tolist(), d.tolist()


@pytest.mark.parametrize("flags", [(True, True, True), (False, True, False), (True, False, True)])
def test_batched_builder_equals_dgl_batch(flags):
    dgl = pytest.importorskip("dgl")
    use_inst, use_label, use_match = flags
    C, M, counts = 4, 6, [1, 6, 3]
    boxes, mask = random_boxes(counts, M, seed=3)
    nbr, nm = knn_neighbours(boxes, mask, 5) if use_inst else (None, None)
    g = build_dgl_graph(mask, nbr, nm, C, use_label, use_match)
    def single(b):
        mb, bb = mask[b:b + 1, :counts[b]], boxes[b:b + 1, :counts[b]]
        nb, nmb = knn_neighbours(bb, mb, 5) if use_inst else (None, None)
        return build_dgl_graph(mb, nb, nmb, C, use_label, use_match)

    singles = [single(b) for b in range(3)]
    ref = dgl.batch(singles)
    assert set(g.canonical_etypes) == set(ref.canonical_etypes)
    assert (K.KNN in g.canonical_etypes) == use_inst and (K.CO in g.canonical_etypes) == use_label
    assert (K.MATCH_REV in g.canonical_etypes) == use_match and K.MATCH in g.canonical_etypes
    for nt in (K.INST, K.LABEL):
        assert g.batch_num_nodes(nt).tolist() == ref.batch_num_nodes(nt).tolist()
    assert g.batch_num_nodes(K.INST).tolist() == counts
    for et in g.canonical_etypes:
        assert g.batch_num_edges(et).tolist() == ref.batch_num_edges(et).tolist()
        assert sorted(zip(*_edges(g, et))) == sorted(zip(*_edges(ref, et)))
    assert g.num_edges(K.MATCH) == sum(counts) * C
    if use_label:
        assert g.num_edges(K.CO) == 3 * C * (C - 1)
    if use_inst:  # in-degree min(k, m-1) for every instance
        deg = g.in_degrees(etype=K.KNN).tolist()
        assert deg == [min(5, m - 1) for m in counts for _ in range(m)]
    if use_match:  # reverse relation: same pairs, same edge order
        s, d = _edges(g, K.MATCH)
        rs, rd = _edges(g, K.MATCH_REV)
        assert rs == d and rd == s
    # pos maps each matching edge to its dense (image, slot, label) cell
    pos = g.edges[K.MATCH].data[K.F_POS]
    s, d = g.edges(etype=K.MATCH)
    b, rem = pos // (M * C), pos % (M * C)
    slot, lab = rem // C, rem % C
    gid = torch.cumsum(mask.reshape(-1).long(), 0).view(3, M) - 1
    assert torch.equal(gid[b, slot], s) and torch.equal(b * C + lab, d)
    assert torch.equal(g.nodes[K.LABEL].data[K.F_CID], d.new_tensor(list(range(C)) * 3))
