"""gmbench: a benchmark suite for multi-label image classification around GM-MLIC.

Pipeline: data → instances → graph → models → engine → metrics → runner → tables
(see docs/architecture.md). Importing gmbench does not import DGL.
"""
__version__ = "0.1.0"

from .registry import create_model, list_datasets, list_models  # noqa: E402,F401
