"""Assignment-graph construction for GM-MLIC; see ``keys`` for every node/edge key."""
from . import keys  # noqa: F401
from .build import build_dgl_graph, knn_neighbours, label_pair_mask, prepare_instances  # noqa: F401
from .dgl_util import WORKING_STACKS, dgl_runs_on, require_dgl  # noqa: F401
