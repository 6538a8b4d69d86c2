"""Detectors trained on a dataset's training-split boxes (the instances stage's own detector).

* ``config.DetectorTrainConfig`` – the validated ``detector:`` block (pydantic only);
* ``model`` – Faster R-CNN from an architecture spec; the weights file format;
* ``train.train_detector`` – training with checkpoints/resume, box AP (``evaluate``);
* ``suite.ensure_instances`` – the runner's hook: train once, extract both splits.
The CLI is ``python -m gmbench detector train``.
"""
