"""Assignment-graph construction for GM-MLIC; see ``keys`` for every node/edge key."""
from . import keys
from .build import build_dgl_graph, knn_neighbours, label_pair_mask, prepare_instances
from .dgl_util import WORKING_STACKS, dgl_runs_on, require_dgl

__all__ = ["keys", "build_dgl_graph", "knn_neighbours", "label_pair_mask", "prepare_instances",
           "WORKING_STACKS", "dgl_runs_on", "require_dgl"]
