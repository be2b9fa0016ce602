"""The one place TensorFlow is imported, with the error that says how to install it."""

from __future__ import annotations

import os

from .. import TrainingError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:
    import keras
    import tensorflow as tf
except ImportError:  # pragma: no cover - depends on the install
    raise TrainingError(
        "this verb needs TensorFlow: pip install 'defect-inspector[train]'"
    ) from None

__all__ = ["keras", "tf"]
