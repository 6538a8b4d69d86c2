import os
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")
# One intra-op thread: on a shared 2-core box, two OpenMP threads per process
# are often 5x slower than one (spin-waiting); subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Tiny synthetic settings shared by end-to-end tests (seconds on a 2-core CPU).
TINY = {
    "data.n_train": 24, "data.n_test": 16, "data.resolution": 32, "data.image_size": 32,
    "data.num_classes": 5, "train.epochs": 1, "train.batch_size": 8,
}


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated data goes to a per-session temp dir, not ~/.cache."""
    old = os.environ.get("GMBENCH_CACHE")
    os.environ["GMBENCH_CACHE"] = str(tmp_path_factory.mktemp("gmbench-cache"))
    yield
    if old is None:
        os.environ.pop("GMBENCH_CACHE", None)
    else:
        os.environ["GMBENCH_CACHE"] = old


def tiny_sets(**extra):
    return [f"{k}={v}" for k, v in {**TINY, **extra}.items()]


def subprocess_env(**extra):
    """os.environ for a child ``python -m gmbench``: the repo first on PYTHONPATH, and any
    PYTHONPATH already set kept after it (a machine whose packages come that way)."""
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4 (each imports torch; the tests run one
    thread each and many wait on subprocesses)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    # one SLURM cluster per test session: its tests share one xdist worker (--dist loadgroup)
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster on localhost (tests/slurm_cluster.py); sets SLURM_CONF.
    Skips where SLURM cannot start (not root, not installed), but fails under CI=true."""
    from slurm_cluster import Cluster, Unavailable
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Unavailable as e:
        cluster.stop()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SLURM must run in CI: {e}")
        pytest.skip(f"no local SLURM cluster: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
