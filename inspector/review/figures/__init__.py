"""What the pages show, computed from files and numbers alone: charts drawn as SVG
(``plots.py``), evaluation reports side by side (``reports.py``), a model's card
(``modelcard.py``), its operating point (``operating.py``) and a station's yield
(``linestats.py``).

Pure functions: they import nothing of the workbench.
"""
