"""The anomaly model from good parts only (``method: anomaly``): settings, graph, memory bank,
streaming fit, export with parity, evaluation and its verbs' output; ``kind.KIND`` registers it.

May import ``training.common``, ``training.data``, ``inspector.contract``,
``inspector.errors`` and ``inspector.station``; never another model kind, the registry, a
bench or the CLI.
"""
