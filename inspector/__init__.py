"""Defect Inspector: line-side visual defect inspection.

A house of rooms; each room's ``__init__`` says what lives there and what it may import.

- ``contract/``: what crosses a boundary: records, the one preprocessing function and its
  geometry, the model manifest, trigger parsing, broker settings, the config loader, JSON
  Schemas of the MQTT messages.
- ``station/``: the line runtime: capture, classify, decide, publish, record, watch.
- ``gate/``: the reference reject gate and its actuators.
- ``lab/``: tools for developers and QA (bench, simulator, demo, embedded broker, model kit);
  never imported by ``station/`` or ``gate/``.
- ``cli``, ``errors``, ``logs``: the one command line and what every room shares.

The runtime in this package runs on the line PC. It imports numpy, OpenCV,
ONNX Runtime, paho-mqtt and PyYAML, never TensorFlow (``tests/test_layout.py`` holds this).
"""

__version__ = "0.1.0"
