"""Every node type, edge type and feature key of the GM-MLIC assignment graph.

This is the one place that names them; the graph builders and both model
backends (DGL heterograph and dense tensors) import from here.

Node types (DGL ``ntype``)
    ``instance`` (INST)   one node per valid instance (detector box or annotation box)
    ``label``    (LABEL)  one node per class, C per image

Edge types (DGL canonical etypes; ``src → dst``)
    KNN       (instance, knn, instance)      instance spatial graph Go: j → i when j is among
                                             the k nearest instances of i by box-centre distance
                                             (so every node receives min(k, m_i - 1) edges)
    CO        (label, co, label)             label semantic graph Gl: every ordered pair of
                                             distinct labels of the same image, C·(C-1) edges
    MATCH     (instance, match, label)       matching edges, every instance × every label of
                                             the same image, m_i·C edges; the ONLY holder of
                                             the matching-edge state
    MATCH_REV (label, match_rev, instance)   the same pairs reversed, in the same edge order as
                                             MATCH (edge k of MATCH_REV reverses edge k of
                                             MATCH); carries no state, only the per-step
                                             message for instance nodes, copied from MATCH

Node features (instance features f and boxes are passed to the backend as tensors in
graph order, not stored on the graph)
    F_CID    label     long  [N_l]       class index of the label node (0..C-1)
    F_STATE  both      float [N, d]      current node state v^o / v^l

Edge features
    F_STATE  all       float [E, d]      current edge state e^o / e^l / e^m (not on MATCH_REV)
    F_POS    MATCH     long  [E_m]       flat index b·M·C + j·C + c into the dense [B, M, C]
                                         score tensor (instance slot j of image b, label c)

Temporaries (only inside ``graph.local_scope()``)
    T_SRC, T_DST  per-node first-layer projections of a factorised edge MLP
    T_PRE         per-edge pre-activation after combining the per-node projections
    T_MSG         per-edge message ρ(·) before the mean
    T_AGG_O, T_AGG_L, T_AGG_M  means over instance / label / matching neighbours
    T_LOGIT       per-edge decoder logit on MATCH; T_POOL its max over instances per label

Dense backend layouts (same meaning, batched, with masks)
    instance nodes   [B, M, d]       + inst_mask [B, M]
    label nodes      [B|1, C, d]     (batch dim 1 while still image-independent)
    knn edges        [B, M, K, d]    dst-major: [b, i, k] is the edge nbr[b, i, k] → i;
                                     + nbr_mask [B, M, K]
    label edges      [B|1, C, C, d]  dst-major: [b, i, j] is the edge j → i; diagonal masked
    matching edges   [B, M, C, d]    [b, j, c] is the edge instance j → label c
"""
INST = "instance"
LABEL = "label"

KNN = (INST, "knn", INST)
CO = (LABEL, "co", LABEL)
MATCH = (INST, "match", LABEL)
MATCH_REV = (LABEL, "match_rev", INST)

F_CID = "cid"
F_STATE = "x"
F_POS = "pos"

T_SRC = "_src"
T_DST = "_dst"
T_PRE = "_pre"
T_MSG = "_msg"
T_AGG_O = "_agg_o"
T_AGG_L = "_agg_l"
T_AGG_M = "_agg_m"
T_LOGIT = "_logit"
T_POOL = "_pool"
