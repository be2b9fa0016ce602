"""The training benchmarks (``inspector bench small|accuracy|anomaly``, ``python -m
training.bench.cam|anomalymem``): tools that measure; no model kind imports them.

May import ``training.registry``, the model kinds, ``training.common`` and what they may;
never the CLI (``training.cli``, ``inspector.cli``) or ``inspector.lab``.
"""
