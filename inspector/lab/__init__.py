"""Tools for developers and QA engineers: bench, bench gate, simulator and scorecard, demo,
the embedded broker, the model kit (synthetic parts and tiny ONNX models).

May import every other room; nothing in ``station/`` or ``gate/`` imports it.
"""
