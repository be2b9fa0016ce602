"""The images a model learns from: datasets (find, split, read through the one preprocessing
function, check), what the workbench's review says of an image, a run's saved split,
cross-split duplicates, the frame setup recordings carry, the ELPV import.

May import ``training`` (``TrainingError``), ``inspector.contract``, ``inspector.errors`` and
``inspector.station`` (public names); nothing else of ``training``.
"""
