"""Collect (dataset index, probs, targets) batch by batch and across ranks.

    acc = MetricAccumulator()
    for batch in loader:                  # DistributedSampler or not
        acc.update(batch["index"], probs, batch["target"])
    metrics = acc.gather().compute()      # same numbers on every rank

A DistributedSampler pads the dataset by repeating samples so that every rank
gets as many; rows are therefore deduplicated by dataset index (the first copy,
i.e. the lowest rank's, is kept) and sorted by it, which makes the result
exactly that of one process evaluating the whole set.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._validate import check_pair, to_numpy
from .core import evaluate

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray]
_LAST_GATHER: List[Any] = []  # tensor objects of the last gather, see gather()


class MetricAccumulator:
    """Accumulates predictions; ``compute(**evaluate_kwargs)`` returns ``evaluate``'s dict."""

    def __init__(self) -> None:
        self._parts: List[Arrays] = []

    def reset(self) -> None:
        self._parts = []

    def __len__(self) -> int:
        """Rows stored so far, duplicates included."""
        return sum(len(i) for i, _, _ in self._parts)

    def update(self, index: Any, probs: Any, targets: Any) -> None:
        """Add one batch: index [B] (dataset rows), probs [B, C], targets [B, C]."""
        p, t = check_pair(probs, targets)
        idx = to_numpy(index, "index") if not isinstance(index, (list, tuple, range)) \
            else np.asarray(index)
        if idx.ndim != 1 or len(idx) != len(p):
            raise ValueError(f"index must be 1-D with one entry per row of probs "
                             f"({len(p)}), got shape {tuple(idx.shape)}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"index must hold integers, got dtype {idx.dtype}")
        if idx.size and idx.min() < 0:
            raise ValueError(f"index must be >= 0, got {int(idx.min())}")
        if self._parts and self._parts[0][1].shape[1] != p.shape[1]:
            raise ValueError(f"probs has {p.shape[1]} classes but earlier batches had "
                             f"{self._parts[0][1].shape[1]}")
        self._parts.append((idx.astype(np.int64), p, t))

    def state(self) -> Arrays:
        """(index [M], probs float32|float64 [M, C], targets int8 [M, C]): unique, ascending."""
        if not self._parts:
            raise ValueError("MetricAccumulator is empty: call update() before compute()")
        idx = np.concatenate([i for i, _, _ in self._parts])
        p = np.concatenate([x for _, x, _ in self._parts])
        t = np.concatenate([x for _, _, x in self._parts])
        order = np.argsort(idx, kind="stable")  # stable: the first copy stays first
        idx, p, t = idx[order], p[order], t[order]
        dup = np.zeros(len(idx), dtype=bool)
        dup[1:] = idx[1:] == idx[:-1]
        if dup.any():
            clash = dup & np.concatenate([[False], (t[1:] != t[:-1]).any(axis=1)])
            if clash.any():
                raise ValueError(f"dataset index {int(idx[np.argmax(clash)])} was added twice "
                                 "with different targets: the index does not identify samples")
            keep = ~dup
            idx, p, t = idx[keep], p[keep], t[keep]
        return idx, p, t

    def compute(self, **evaluate_kwargs: Any) -> Dict[str, Any]:
        """``evaluate`` on the deduplicated rows (call ``gather()`` first under DDP)."""
        _, p, t = self.state()
        return evaluate(p, t, **evaluate_kwargs)

    def gather(self) -> "MetricAccumulator":
        """All-gather every rank's rows so each rank holds the whole set; returns self.

        A no-op without an initialised torch.distributed process group or with one
        rank. Works with gloo (CPU tensors) and nccl (tensors on the current GPU).
        The rows travel as one float64 tensor [rows, 1 + 2C] padded to the largest
        rank: float64 holds the index (< 2**53), any float32/float64 prob and the
        targets exactly, and no pickling is involved.

        The communication tensors are emptied but kept referenced until the
        next gather (``_LAST_GATHER``): if gloo's worker thread dropped the last
        reference to a tensor of a finished work, it would need the GIL, and a
        ``destroy_process_group()`` right after (which holds the GIL while it
        joins that thread, in torch releases such as the pinned 2.2) deadlocks.
        """
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return self
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        from ..utils.dist import comm_device
        device = comm_device()
        # A local error is shared through the first gather, so that every rank
        # raises instead of the others waiting in the second one.
        idx, p, t = np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros((0, 0), np.int8)
        error = ""
        try:
            if self._parts:
                idx, p, t = self.state()
            if idx.size and idx.max() >= 2 ** 53:
                raise ValueError(f"index {int(idx.max())} is too large to gather exactly")
        except ValueError as exc:
            error = str(exc)
        world = dist.get_world_size()
        meta = torch.tensor([len(idx), p.shape[1] if len(idx) else -1, int(bool(error))],
                            device=device)
        metas = [torch.zeros_like(meta) for _ in range(world)]
        _LAST_GATHER[:] = [meta] + metas
        dist.all_gather(metas, meta)
        failed = [r for r, m in enumerate(metas) if int(m[2])]
        if failed:
            raise ValueError(error or f"MetricAccumulator.gather failed on rank(s) {failed}")
        sizes = [int(m[0]) for m in metas]
        classes = {int(m[1]) for m in metas if int(m[0]) > 0}
        if len(classes) > 1:
            raise ValueError(f"ranks disagree on the number of classes: {sorted(classes)}")
        if not classes:
            return self
        c = classes.pop()
        rows = max(sizes)
        packed = np.zeros((rows, 1 + 2 * c), dtype=np.float64)
        if len(idx):
            packed[:len(idx), 0] = idx
            packed[:len(idx), 1:1 + c] = p
            packed[:len(idx), 1 + c:] = t
        mine = torch.from_numpy(packed).to(device)
        bufs = [torch.empty_like(mine) for _ in range(world)]
        _LAST_GATHER.extend([mine] + bufs)
        dist.all_gather(bufs, mine)
        allrows = np.concatenate([b.cpu().numpy()[:n] for b, n in zip(bufs, sizes)])
        for x in _LAST_GATHER:
            x.set_()  # free the memory, keep the tensor objects (see above)
        self._parts = [(allrows[:, 0].astype(np.int64), allrows[:, 1:1 + c].copy(),
                        allrows[:, 1 + c:].astype(np.int8))]
        return self

    def n_samples(self) -> Optional[int]:
        """Unique dataset indices held (None if nothing was added)."""
        return len(self.state()[0]) if self._parts else None
