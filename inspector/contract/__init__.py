"""What crosses a boundary: records, preprocessing and geometry, manifest, triggers, MQTT
settings, the config loader and the JSON Schemas of the line contract.

May import only ``inspector.errors`` and the libraries; every other room imports it.
Public names used outside ``inspector``: ``contract.preprocess.preprocess`` (the one
preprocessing function, with ``PreprocessSpec`` and ``FrameError``) and
``contract.manifest`` (the model manifest: ``Manifest``, ``parse``, ``embed``).
"""
