"""Detectors trained on a dataset's training-split boxes (the instances stage's own detector).

* ``config.DetectorTrainConfig`` – the validated ``detector:`` block (pydantic only);
* ``model`` – Faster R-CNN from an architecture spec; the weights file format;
* ``train.train_detector`` – training with checkpoints/resume, box AP (``evaluate``);
The runner trains a row's detector through ``gmbench.instances.source.prepare`` (the layer
above); nothing here imports the instances layer.
The CLI is ``python -m gmbench detector train``.
"""
