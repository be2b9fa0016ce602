"""Offline retraining for QA engineers: dataset -> train -> evaluate -> self-describing ONNX.

``training`` may import ``inspector`` (for the one preprocessing function and the model
manifest); ``inspector``'s runtime never imports ``training``. TensorFlow is imported
only by the modules that build, train or export Keras models (``models``, ``train``,
``export``); dataset checks, thresholds, metrics and the evaluation of an ONNX file run
without it.

The verbs (``inspector dataset|train|evaluate|export|bench accuracy``) live in
``training.cli``.
"""

from inspector.errors import InspectorError


class TrainingError(InspectorError):
    """A dataset, training config or run folder the user must fix (exit code 2)."""

    exit_code = 2
