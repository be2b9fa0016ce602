"""Defect Inspector: line-side visual defect inspection.

The runtime in this package runs on the line PC. It imports numpy, OpenCV,
ONNX Runtime, paho-mqtt and PyYAML, never TensorFlow.
"""

__version__ = "0.1.0"
