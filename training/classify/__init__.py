"""The classifier (``method: classify``): models, recipe, training, export with parity and
FP16/INT8 variants, evaluation and its verbs' output; ``kind.KIND`` registers it.

May import ``training.common``, ``training.data``, ``inspector.contract``,
``inspector.errors`` and ``inspector.station``; never another model kind, the registry, a
bench or the CLI.
"""
