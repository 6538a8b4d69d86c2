"""Models that ship with gmbench (the baselines live in ``baselines/``)."""
from . import gm_mlic  # noqa: F401
