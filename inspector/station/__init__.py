"""The line runtime: sources, trigger matching, classifier, decision, publisher, recorder,
quality watch, metrics and the pipeline that wires them (``pipeline.Station``).

May import ``inspector.contract``, ``inspector.errors`` and ``inspector.logs``; never
``inspector.gate``, ``inspector.lab``, ``training`` or TensorFlow. Public names used
outside: ``station.classifier.Classifier`` (ONNX Runtime on a model file),
``station.config`` (``load_config``, ``StationConfig``, ``ModelSection``).
"""
