"""Offline retraining for QA engineers: dataset -> train -> evaluate -> self-describing ONNX.

Rooms, lowest first; a module imports only its own room and those below it:

- ``data/``: datasets and their checks, duplicates across splits, frame setups, ELPV;
- ``common/``: the training config, metrics, thresholds, the guard, reports, run folders,
  the pretrained backbone, ONNX export helpers;
- ``classify/``, ``anomaly/``: one room per model kind, each with a ``kind.py`` (``KIND``);
  neither imports the other;
- ``registry``: the model kinds in one place (train, export, evaluate and the verbs'
  output of each), asked by the CLI and the benches;
- ``bench/``: the training benchmarks;
- ``cli`` (the verbs ``inspector dataset|train|evaluate|export|bench accuracy``) and
  ``demo_model`` (``python -m training.demo_model``).

``training`` may import ``inspector`` (the one preprocessing function, the model manifest,
the station's classifier for parity); ``inspector``'s runtime never imports ``training``.
TensorFlow is imported only through ``common/tf.py``, by the code that builds, trains or
exports Keras models; dataset checks, thresholds, metrics and the evaluation of an ONNX
file run without it. ``tests/test_layout_packages.py`` holds these rules.
"""

from inspector.errors import InspectorError


class TrainingError(InspectorError):
    """A dataset, training config or run folder the user must fix (exit code 2)."""

    exit_code = 2
