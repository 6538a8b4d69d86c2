"""Optional TensorBoard scalars (``train.tensorboard: true``) through torch.utils.tensorboard.

One event folder per run (the runner uses OUT/SUITE/tb/<run_id>); a resumed run appends a
new event file to it. Install with ``pip install 'gmbench[tensorboard]'``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


class MissingTensorBoard(ImportError):
    pass


def open_writer(enabled: bool, folder: Path):
    """A SummaryWriter on ``folder``, or None when disabled."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MissingTensorBoard(
            f"train.tensorboard: true needs the tensorboard package ({e}); "
            f"pip install 'gmbench[tensorboard]' or set train.tensorboard: false") from None
    return SummaryWriter(log_dir=str(folder))


def log_epoch(writer, epoch: int, row: Dict[str, Any], metrics: Dict[str, Any],
              raw: Optional[Dict[str, Any]] = None) -> None:
    """Scalars of one finished epoch: train loss, lr, test metrics (EMA's and raw's)."""
    if writer is None:
        return
    writer.add_scalar("train/loss", row["loss"], epoch)
    writer.add_scalar("train/lr", row["lr"], epoch)
    for name, m in (("test", metrics), ("test_raw", raw)):
        for k in METRICS:
            if m is not None and isinstance(m.get(k), (int, float)):
                writer.add_scalar(f"{name}/{k}", m[k], epoch)
    writer.flush()
