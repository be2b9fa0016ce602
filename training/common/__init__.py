"""Shared ground of every model kind: datasets, frame setups, the training config, metrics,
thresholds, the guard, reports, run folders, the pretrained backbone, ONNX export helpers.

May import ``training`` (``TrainingError``), ``inspector.contract``, ``inspector.errors`` and
``inspector.station`` (public names); never a model kind, the registry, a bench or the CLI.
"""
