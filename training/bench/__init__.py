"""The training benchmarks (``inspector bench small|accuracy|anomaly``, ``python -m
training.bench.cam|anomalymem``): tools that measure; no model kind imports them.

May import ``training.registry``, the model kinds and the rooms below them;
never the CLI (``training.cli``, ``inspector.cli``) or ``inspector.lab``.
"""
