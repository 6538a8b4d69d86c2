"""torch.distributed helpers; every function is a no-op in a single process.

Launch with ``torchrun --nproc_per_node=N -m gmbench run ...``: torchrun sets
RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous; NCCL on GPU, gloo on CPU.
"""
from __future__ import annotations

import json
import os
from collections import deque

import torch
import torch.distributed as dist

# Tensors of recent collectives stay referenced here. If gloo's worker thread dropped the
# last reference to one, it would need the GIL, and destroy_process_group() joins that thread
# while holding the GIL (torch 2.2): the process then hangs at exit. Seen: a two-rank
# `gmbench extract` hung at exit in about half of its runs. See also MetricAccumulator.gather.
_IN_FLIGHT: deque = deque(maxlen=64)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> bool:
    """Initialise the process group when launched by torchrun. Returns True if distributed."""
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    store = _agent_store_for_this_attempt()
    if store is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    return True


def _agent_store_for_this_attempt():
    """The torchrun agent's TCPStore, namespaced by restart attempt; None when the agent
    does not share its store (then torch's env:// rendezvous is used as is).

    Why: since torch 2.4 the c10d rendezvous (``--standalone``, ``--rdzv-backend=c10d``)
    shares one agent-owned TCPStore with the workers (TORCHELASTIC_USE_AGENT_STORE=True),
    and torch's env:// handler no longer prefixes it per attempt (torch <= 2.3 used
    ``/worker/attempt_N``). The agent keeps that store across ``--max-restarts``, so a
    restarted rank read the killed rank 0's gloo address from the previous attempt and
    failed with ``connectFullMesh ... Connection refused`` (torch 2.14.1). The restart
    count is per agent: one node is exact; see docs/architecture.md for several nodes.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed.constants import default_pg_timeout
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           int(os.environ["WORLD_SIZE"]), False, default_pg_timeout)
    return dist.PrefixStore(f"gmbench/attempt_{attempt}", client)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (so all ranks take the same branch)."""
    if not is_dist():
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int64, device=comm_device())
    _IN_FLIGHT.append(t)
    dist.all_reduce(t)
    return int(t.item()) == 0


def sum_int(value: int) -> int:
    """``value`` summed over ranks (the value itself in one process)."""
    if not is_dist():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=comm_device())
    _IN_FLIGHT.append(t)
    dist.all_reduce(t)
    return int(t.item())


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank. JSON values only: it travels as JSON text, so
    nothing is unpickled (tuples arrive as lists, dict keys as strings)."""
    if not is_dist():
        return obj
    if is_main():
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).to(comm_device())
        size = torch.tensor([data.numel()], dtype=torch.int64, device=comm_device())
    else:
        size = torch.zeros(1, dtype=torch.int64, device=comm_device())
    _IN_FLIGHT.append(size)
    dist.broadcast(size, src=0)
    if not is_main():
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=comm_device())
    _IN_FLIGHT.append(data)
    dist.broadcast(data, src=0)
    return json.loads(data.cpu().numpy().tobytes().decode())


def shutdown() -> None:
    """Destroy the process group (if any). No barrier: a rank that failed alone must still
    exit, so that torchrun stops the others."""
    if is_dist():
        dist.destroy_process_group()
        _IN_FLIGHT.clear()


def comm_device() -> torch.device:
    """Where collective tensors live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
