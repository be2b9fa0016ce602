"""What the workbench starts and watches: training runs (``jobs.py``), evaluations and exports
(``evaluations.py``, ``exports.py``, as ``inspector`` processes: ``processes.py``), the models
registry (``registry.py``) and promotion to a station (``promote.py``).

Never imports TensorFlow or ``training``: the work runs in processes of its own.
"""
