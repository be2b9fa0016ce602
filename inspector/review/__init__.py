"""The QA workbench (``inspector review``): inbox, relabel, dataset, training runs, compare, models.

May import only ``inspector.contract``, ``inspector.errors`` and ``inspector.logs``; never
``training`` or TensorFlow (training and evaluation run as ``inspector`` subprocesses).
"""
