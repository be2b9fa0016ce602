"""What every model kind shares above its data: the training config, metrics, thresholds and
their bounds, the guard, reports, run folders, the model-kind record, the pretrained
backbone, ONNX export helpers, memory figures.

May import ``training.data``, ``training`` (``TrainingError``), ``inspector.contract``,
``inspector.errors`` and ``inspector.station`` (public names); never a model kind, the
registry, a bench or the CLI.
"""
