"""The line runtime: sources, trigger matching, the model unit (unit, kinds, acceptance, the
life cycle in models), the link to the line (link, publisher), recorder, quality watch,
metrics and the pipeline that wires them (``pipeline.Station``).

May import ``inspector.contract``, ``inspector.errors`` and ``inspector.logs``; never
``inspector.gate``, ``inspector.lab``, ``training`` or TensorFlow. Public names used
outside: ``station.classifier.Classifier`` (ONNX Runtime on a model file),
``station.unit`` (``load_unit``, ``ModelUnit``), ``station.acceptance`` (``acceptance``,
the golden check), ``station.config`` (``load_config``, ``StationConfig``, ``ModelSection``).
"""
